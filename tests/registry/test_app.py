"""Tests of registry.app over real sockets: serving, regeneration, health, and the process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from certs.keys import write_secret_file
from registry.app import PUBLISHER_KEY, create_app
from registry.config import ConfigError, RegistryConfig
from tests.registry.conftest import MakeRegistry, load_config
from xchange.globalconf import ConfigurationAnchor, GlobalConf, TrustedGlobalConf


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def _fetch_conf(client: TestClient[aiohttp.web.Request, aiohttp.web.Application],
                      trusted: TrustedGlobalConf) -> GlobalConf:
    response = await client.get("/globalconf")
    assert response.status == 200
    return trusted.update(await response.read(), now=datetime.now(UTC))


async def test_serves_a_verifiable_configuration(tmp_path: Path,
                                                 make_registry: MakeRegistry) -> None:
    config = load_config(make_registry(tmp_path))
    async with TestClient(TestServer(create_app(config))) as client:
        anchor_response = await client.get("/anchor")
        assert anchor_response.status == 200
        anchor = ConfigurationAnchor.from_json(await anchor_response.read())
        assert len(anchor.certificates) == 1

        response = await client.get("/globalconf")
        assert response.status == 200
        assert response.content_type == "application/json"
        assert response.headers["Cache-Control"] == "no-cache"
        body = await response.read()
        assert body == (config.publish_dir / "globalconf.json").read_bytes()
        conf = TrustedGlobalConf(anchor).update(body, now=datetime.now(UTC))
        assert conf.instance == "TEST" and conf.version == 1
        assert conf.signing_keys == anchor.certificates

        health = await client.get("/health")
        assert health.status == 200
        assert (await health.json())["version"] == 1

        assert (await client.post("/globalconf")).status == 405
        assert (await client.get("/nothing")).status == 404


async def test_regenerates_in_the_background(tmp_path: Path,
                                            make_registry: MakeRegistry) -> None:
    config = load_config(make_registry(tmp_path, regenerate_seconds=0.1))
    async with TestClient(TestServer(create_app(config))) as client:
        anchor = ConfigurationAnchor.from_json(await (await client.get("/anchor")).read())
        trusted = TrustedGlobalConf(anchor)
        first = await _fetch_conf(client, trusted)
        for _ in range(50):
            await asyncio.sleep(0.1)
            conf = await _fetch_conf(client, trusted)
            if conf.version > first.version:
                break
        else:
            pytest.fail("no new version was published")


async def test_a_failed_publication_keeps_serving_the_last_good_copy(
    tmp_path: Path, make_registry: MakeRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(make_registry(tmp_path, regenerate_seconds=0.1))
    app = create_app(config)
    async with TestClient(TestServer(app)) as client:
        good = await (await client.get("/globalconf")).read()
        keys = {p: p.read_bytes() for p in config.keys_dir.glob("conf-sign-*.key")}
        for path in keys:
            path.unlink()
        with caplog.at_level(logging.ERROR, logger="registry.app"):
            for _ in range(50):
                await asyncio.sleep(0.1)
                if caplog.records:
                    break
        assert "still serving version" in caplog.records[0].getMessage()
        latest = app[PUBLISHER_KEY].latest
        assert latest is not None and latest.signed == good
        served = await (await client.get("/globalconf")).read()
        assert served == good

        for path, data in keys.items():
            path.write_bytes(data)
        for _ in range(50):
            await asyncio.sleep(0.1)
            served = await (await client.get("/globalconf")).read()
            if json.loads(served)["signed"]["version"] > json.loads(good)["signed"]["version"]:
                break
        else:
            pytest.fail("publishing did not resume")


async def test_health_fails_once_the_publication_expires(
    tmp_path: Path, make_registry: MakeRegistry
) -> None:
    config = load_config(make_registry(tmp_path, regenerate_seconds=3600))
    clock = FakeClock()
    async with TestClient(TestServer(create_app(config, clock=clock))) as client:
        assert (await client.get("/health")).status == 200
        clock.now += timedelta(seconds=601)
        response = await client.get("/health")
        assert response.status == 503
        assert (await response.json())["status"] == "expired"


async def test_an_uninitialised_registry_does_not_start(tmp_path: Path) -> None:
    path = tmp_path / "registry.toml"
    path.write_text("")
    runner = aiohttp.web.AppRunner(create_app(RegistryConfig.from_file(path)))
    with pytest.raises(ConfigError, match="xchange registry init"):
        await runner.setup()
    await runner.cleanup()


async def test_a_wrong_passphrase_keeps_the_registry_from_starting(
    tmp_path: Path, make_registry: MakeRegistry
) -> None:
    path = make_registry(tmp_path)
    write_secret_file(tmp_path / "passphrase", b"not the passphrase")
    runner = aiohttp.web.AppRunner(create_app(load_config(path)))
    with pytest.raises(ConfigError, match="wrong passphrase"):
        await runner.setup()
    await runner.cleanup()


def test_the_passphrase_must_have_been_read(tmp_path: Path, make_registry: MakeRegistry) -> None:
    with pytest.raises(ConfigError, match=r"call RegistryConfig\.from_env"):
        create_app(RegistryConfig.from_file(make_registry(tmp_path)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.e2e
async def test_the_registry_process(tmp_path: Path, make_registry: MakeRegistry) -> None:
    port = _free_port()
    config_path = make_registry(tmp_path, listen_port=port)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "registry", "--config", str(config_path),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        assert f"listening on http://127.0.0.1:{port}" in line.decode()
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            async with session.get("/anchor") as response:
                anchor = ConfigurationAnchor.from_json(await response.read())
            async with session.get("/globalconf") as response:
                data = await response.read()
        conf = TrustedGlobalConf(anchor).update(data, now=datetime.now(UTC))
        assert conf.version == 1
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)
