"""Tests of security_server.confclient: refresh, last good copy, cache file, expiry.

The registry is played by :func:`sign_envelope` and an in-memory :class:`ConfFetcher`; time
by a fake clock.  Nothing touches the network.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from certs.keys import PrivateKey, generate_private_key
from security_server.confclient import CACHE_FILE, KEYS_FILE, ConfFetcher, GlobalConfClient
from xchange.errors import GlobalConfOutdatedError
from xchange.globalconf import (
    ConfigurationAnchor,
    GlobalConf,
    MemberInfo,
    sign_envelope,
    sign_envelope_by,
)
from xchange.identifiers import ClientId

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
URL = "https://registry.test/globalconf"
EXPIRY = 600


@dataclass(frozen=True)
class Signer:
    key: PrivateKey
    cert: x509.Certificate


def make_signer(name: str) -> Signer:
    """A configuration-signing key with a self-signed certificate, as the registry has."""
    key = generate_private_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0 - timedelta(days=1)).not_valid_after(T0 + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return Signer(key, cert)


@pytest.fixture(scope="session")
def registry() -> Signer:
    return make_signer("TEST configuration signer")


@pytest.fixture(scope="session")
def stranger() -> Signer:
    return make_signer("not the registry")


@pytest.fixture(scope="session")
def anchor(registry: Signer) -> ConfigurationAnchor:
    return ConfigurationAnchor("TEST", (registry.cert,), URL, T0)


Publish = Callable[..., bytes]


@pytest.fixture(scope="session")
def publish(registry: Signer) -> Publish:
    """``publish(version)``: the registry's signed global configuration of that version."""

    def make(
        version: int,
        *,
        generated_at: datetime | None = None,
        signer: Signer | None = None,
        instance: str = "TEST",
        name: str = "Ministry of Tests",
    ) -> bytes:
        made = T0 + timedelta(minutes=version) if generated_at is None else generated_at
        conf = GlobalConf(
            instance=instance,
            version=version,
            generated_at=made,
            expires_at=made + timedelta(seconds=EXPIRY),
            members=(MemberInfo(ClientId(instance, "GOV", "1234"), name, ("registry",)),),
        )
        by = signer or registry
        return sign_envelope(conf.to_payload(), by.key, by.cert)

    return make


class MemoryFetcher:
    """A :class:`ConfFetcher` that answers from a script: each fetch takes the next response
    (bytes are served, exceptions raised); the last one keeps being answered."""

    def __init__(self, *responses: bytes | Exception) -> None:
        self.responses = list(responses)
        self.urls: list[str] = []

    def serve(self, *responses: bytes | Exception) -> None:
        self.responses = list(responses)

    async def fetch(self, url: str) -> bytes:
        self.urls.append(url)
        response = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(response, Exception):
            raise response
        return response


@dataclass
class FakeClock:
    now: datetime = T0 + timedelta(minutes=5)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Setup:
    client: GlobalConfClient
    fetcher: MemoryFetcher
    clock: FakeClock
    state_dir: Path

    @property
    def cache(self) -> Path:
        return self.state_dir / CACHE_FILE

    def version(self) -> int:
        return self.client.current(self.clock()).version


@pytest.fixture
def setup(anchor: ConfigurationAnchor, tmp_path: Path) -> Setup:
    fetcher = MemoryFetcher(ConnectionRefusedError("nothing served yet"))
    clock = FakeClock()
    seam: ConfFetcher = fetcher  # the in-memory fetcher really implements the Protocol
    state_dir = tmp_path / "state"
    return Setup(GlobalConfClient(anchor, state_dir, seam, clock), fetcher, clock, state_dir)


# -- first load and newer versions ----------------------------------------------------------------


async def test_nothing_is_in_force_before_the_first_load(setup: Setup) -> None:
    with pytest.raises(GlobalConfOutdatedError, match="no global configuration") as info:
        setup.version()
    assert info.value.code == "server.clientproxy.global_conf_outdated"
    assert not setup.state_dir.exists()


async def test_first_refresh_installs_and_caches(setup: Setup, publish: Publish) -> None:
    document = publish(1)
    setup.fetcher.serve(document)
    assert await setup.client.refresh() is True
    assert setup.fetcher.urls == [URL]
    assert setup.version() == 1
    assert setup.client.last_error is None
    assert setup.cache.read_bytes() == document


async def test_newer_version_replaces_the_cache_atomically(setup: Setup, publish: Publish) -> None:
    v1, v2 = publish(1), publish(2)
    setup.fetcher.serve(v1)
    await setup.client.refresh()
    inode = setup.cache.stat().st_ino
    with open(setup.cache, "rb") as reader:  # a reader of the old copy, e.g. a restart
        setup.fetcher.serve(v2)
        setup.clock.advance(60)
        assert await setup.client.refresh() is True
        # Replaced, not rewritten in place: the open file still holds the whole old copy.
        assert reader.read() == v1
    assert setup.version() == 2
    assert setup.cache.read_bytes() == v2
    assert setup.cache.stat().st_ino != inode
    assert sorted(os.listdir(setup.state_dir)) == [KEYS_FILE, CACHE_FILE], "no temporary file left"


async def test_the_same_version_again_changes_nothing(setup: Setup, publish: Publish) -> None:
    setup.fetcher.serve(publish(1))
    assert await setup.client.refresh() is True
    before = setup.cache.stat()
    assert await setup.client.refresh() is False
    after = setup.cache.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert setup.version() == 1


# -- bad documents and failed downloads keep the last good copy -----------------------------------


BAD_DOCUMENTS = [
    pytest.param(lambda p, s: p(3, signer=s), "not signed by a trusted key", id="stranger"),
    pytest.param(
        lambda p, s: p(3).replace(b"Ministry of Tests", b"Ministry of Tricks"),
        "signature does not verify", id="tampered-payload",
    ),
    pytest.param(lambda p, s: p(1), "rollback refused", id="rollback"),
    pytest.param(
        lambda p, s: p(2, name="Ministry of Other Tests"), "differs from the current document",
        id="same-version-other-content",
    ),
    pytest.param(lambda p, s: p(3, instance="OTHER"), "for instance 'OTHER'", id="other-instance"),
    pytest.param(
        lambda p, s: p(3, generated_at=T0 - timedelta(hours=1)), "expired", id="already-expired",
    ),
    pytest.param(lambda p, s: b"<html>502 Bad Gateway</html>", "JSON", id="garbage"),
    pytest.param(lambda p, s: b"", "JSON", id="empty"),
    pytest.param(lambda p, s: b'{"signed": {}, "signatures": []}', "schema", id="hollow-envelope"),
]


@pytest.mark.parametrize(("make_bad", "error"), BAD_DOCUMENTS)
async def test_a_bad_document_keeps_the_last_good_copy(
    setup: Setup,
    publish: Publish,
    stranger: Signer,
    make_bad: Callable[[Publish, Signer], bytes],
    error: str,
) -> None:
    good = publish(2)
    setup.fetcher.serve(good)
    await setup.client.refresh()

    setup.fetcher.serve(make_bad(publish, stranger))
    assert await setup.client.refresh() is False
    assert setup.client.last_error is not None
    assert error in setup.client.last_error
    assert setup.version() == 2
    assert setup.cache.read_bytes() == good

    # The next good download clears the error.
    setup.fetcher.serve(publish(3))
    assert await setup.client.refresh() is True
    assert setup.client.last_error is None
    assert setup.version() == 3


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (TimeoutError(), "TimeoutError"),
        (aiohttp.ClientConnectionError("connection reset"), "connection reset"),
        (ConnectionRefusedError(111, "Connection refused"), "Connection refused"),
        (ValueError("global configuration larger than allowed"), "larger than allowed"),
    ],
)
async def test_a_failed_download_is_survived(
    setup: Setup, publish: Publish, failure: Exception, error: str
) -> None:
    good = publish(1)
    setup.fetcher.serve(good)
    await setup.client.refresh()

    setup.fetcher.serve(failure)
    assert await setup.client.refresh() is False
    assert setup.client.last_error is not None
    assert error in setup.client.last_error
    assert setup.version() == 1
    assert setup.cache.read_bytes() == good


async def test_a_failed_download_before_any_load_leaves_nothing_in_force(setup: Setup) -> None:
    assert await setup.client.refresh() is False
    assert setup.client.last_error == "nothing served yet"
    with pytest.raises(GlobalConfOutdatedError):
        setup.version()


async def test_an_unwritable_cache_does_not_stop_refreshing(
    setup: Setup, publish: Publish
) -> None:
    # Something in the way of the state folder (a full or read-only disk behaves alike).
    setup.state_dir.write_bytes(b"not a folder")
    document = publish(1)
    setup.fetcher.serve(document)
    assert await setup.client.refresh() is True
    assert setup.version() == 1, "the verified copy is in force even if it cannot be cached"
    assert setup.client.last_error is not None
    assert "cache" in setup.client.last_error

    # Once the folder can be written, the next refresh writes the copy it could not before.
    setup.state_dir.unlink()
    await setup.client.refresh()
    assert setup.client.last_error is None
    assert setup.cache.read_bytes() == document


# -- starting from the cache ----------------------------------------------------------------------


async def test_load_cached_starts_with_the_last_good_copy(
    setup: Setup, anchor: ConfigurationAnchor, publish: Publish
) -> None:
    setup.fetcher.serve(publish(1))
    await setup.client.refresh()
    inode = setup.cache.stat().st_ino

    # A restart with the registry unreachable.
    offline = MemoryFetcher(TimeoutError())
    restarted = GlobalConfClient(anchor, setup.state_dir, offline, setup.clock)
    restarted.load_cached()
    assert offline.urls == []
    assert restarted.current(setup.clock()).version == 1

    # Once the registry answers with the same version, the cache is not written again.
    offline.serve(publish(1))
    assert await restarted.refresh() is False
    assert setup.cache.stat().st_ino == inode


@pytest.mark.parametrize(
    "cached",
    [
        pytest.param(lambda p, s: b"\x00garbage", id="garbage"),
        pytest.param(lambda p, s: p(1, signer=s), id="stranger"),
        pytest.param(lambda p, s: p(1, generated_at=T0 - timedelta(hours=1)), id="expired"),
    ],
)
async def test_load_cached_ignores_an_unusable_copy(
    setup: Setup,
    publish: Publish,
    stranger: Signer,
    cached: Callable[[Publish, Signer], bytes],
) -> None:
    setup.state_dir.mkdir()
    setup.cache.write_bytes(cached(publish, stranger))
    setup.client.load_cached()  # logged, not raised: the server starts and downloads
    with pytest.raises(GlobalConfOutdatedError):
        setup.version()

    fresh = publish(2)
    setup.fetcher.serve(fresh)
    assert await setup.client.refresh() is True
    assert setup.cache.read_bytes() == fresh


async def test_load_cached_without_a_cache_does_nothing(setup: Setup) -> None:
    setup.client.load_cached()
    with pytest.raises(GlobalConfOutdatedError):
        setup.version()
    assert setup.fetcher.urls == []


# -- expiry -------------------------------------------------------------------------------------


async def test_current_raises_outdated_once_the_copy_expires(
    setup: Setup, publish: Publish
) -> None:
    setup.fetcher.serve(publish(1))  # generated at T0 + 1 min, expires EXPIRY s later
    await setup.client.refresh()
    expires_at = T0 + timedelta(minutes=1, seconds=EXPIRY)

    setup.clock.now = expires_at - timedelta(seconds=1)
    assert setup.version() == 1

    # The registry is gone: refreshes fail, the last good copy ages out.
    setup.fetcher.serve(aiohttp.ClientConnectionError("registry down"))
    setup.clock.now = expires_at
    assert await setup.client.refresh() is False
    with pytest.raises(GlobalConfOutdatedError, match="expired") as info:
        setup.version()
    assert info.value.code == "server.clientproxy.global_conf_outdated"

    # The same (now expired) document again is refused, not reinstated.
    setup.fetcher.serve(publish(1))
    assert await setup.client.refresh() is False
    assert setup.client.last_error is not None
    assert "expired" in setup.client.last_error

    # A fresh one brings traffic back.
    setup.fetcher.serve(publish(2, generated_at=expires_at))
    assert await setup.client.refresh() is True
    assert setup.version() == 2


# -- the background loop ------------------------------------------------------------------------


async def test_run_keeps_refreshing_through_failures(setup: Setup, publish: Publish) -> None:
    setup.fetcher.serve(TimeoutError(), b"garbage", aiohttp.ClientConnectionError(), publish(1))
    task = asyncio.create_task(setup.client.run(0))
    try:
        async with asyncio.timeout(5):
            while setup.client.last_error is not None or not setup.cache.exists():
                await asyncio.sleep(0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(setup.fetcher.urls) >= 4
    assert setup.version() == 1


# -- configuration-signing key rotation ---------------------------------------------------------


def rotated(version: int, keys: tuple[Signer, ...], signers: tuple[Signer, ...]) -> bytes:
    made = T0 + timedelta(minutes=version)
    conf = GlobalConf(
        instance="TEST", version=version, generated_at=made,
        expires_at=made + timedelta(seconds=EXPIRY),
        members=(MemberInfo(ClientId("TEST", "GOV", "1234"), "Ministry", ("registry",)),),
        signing_keys=tuple(k.cert for k in keys),
    )
    return sign_envelope_by(conf.to_payload(), [(s.key, s.cert) for s in signers])


async def test_a_rotated_key_is_remembered_across_a_restart(
    setup: Setup, registry: Signer, anchor: ConfigurationAnchor
) -> None:
    """The old key announces the new one; after a restart the new key alone is accepted,
    although the anchor still names only the old one."""
    new = make_signer("next configuration signer")
    setup.fetcher.serve(rotated(1, (registry, new), (registry,)))
    assert await setup.client.refresh() is True
    assert KEYS_FILE in os.listdir(setup.state_dir)

    fetcher = MemoryFetcher(rotated(2, (new,), (new,)))
    restarted = GlobalConfClient(anchor, setup.state_dir, fetcher, setup.clock)
    assert await restarted.refresh() is True
    assert restarted.current(setup.clock()).version == 2


async def test_a_key_nobody_announced_is_refused(setup: Setup, stranger: Signer) -> None:
    setup.fetcher.serve(rotated(1, (stranger,), (stranger,)))
    assert await setup.client.refresh() is False
    assert setup.client.last_error is not None
    assert "not signed by a trusted key" in setup.client.last_error
