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

from registry.app import PUBLISHER_KEY, create_app
from registry.config import ConfigError
from tests.registry.conftest import Pki, load_registry, write_registry
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


async def test_serves_a_verifiable_configuration(tmp_path: Path, pki: Pki) -> None:
    config = load_registry(tmp_path, pki)
    async with TestClient(TestServer(create_app(config))) as client:
        anchor_response = await client.get("/anchor")
        assert anchor_response.status == 200
        anchor = ConfigurationAnchor.from_json(await anchor_response.read())
        assert anchor.certificates == (pki.signing_cert,)

        response = await client.get("/globalconf")
        assert response.status == 200
        assert response.content_type == "application/json"
        assert response.headers["Cache-Control"] == "no-cache"
        body = await response.read()
        assert body == (config.publish_dir / "globalconf.json").read_bytes()
        conf = TrustedGlobalConf(anchor).update(body, now=datetime.now(UTC))
        assert conf.instance == "DEV" and conf.version == 1

        health = await client.get("/health")
        assert health.status == 200
        assert (await health.json())["version"] == 1

        assert (await client.post("/globalconf")).status == 405
        assert (await client.get("/nothing")).status == 404


async def test_regenerates_in_the_background(tmp_path: Path, pki: Pki) -> None:
    config = load_registry(tmp_path, pki, regenerate_seconds=0.1)
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


async def test_bad_data_keeps_serving_the_last_good_copy(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_registry(tmp_path, pki, regenerate_seconds=0.1)
    good_data = config.data_file.read_text()
    app = create_app(config)
    async with TestClient(TestServer(app)) as client:
        good = await (await client.get("/globalconf")).read()
        config.data_file.write_text("{broken")
        with caplog.at_level(logging.ERROR, logger="registry.app"):
            for _ in range(50):
                await asyncio.sleep(0.1)
                if caplog.records:
                    break
        assert "still serving version" in caplog.records[0].getMessage()
        latest = app[PUBLISHER_KEY].latest
        assert latest is not None and latest.signed == good
        served = await (await client.get("/globalconf")).read()
        assert json.loads(served)["signed"]["version"] == json.loads(good)["signed"]["version"]

        config.data_file.write_text(good_data)
        for _ in range(50):
            await asyncio.sleep(0.1)
            served = await (await client.get("/globalconf")).read()
            if json.loads(served)["signed"]["version"] > json.loads(good)["signed"]["version"]:
                break
        else:
            pytest.fail("the fixed data file was not published")


async def test_health_fails_once_the_publication_expires(tmp_path: Path, pki: Pki) -> None:
    config = load_registry(tmp_path, pki, regenerate_seconds=3600)
    clock = FakeClock()
    async with TestClient(TestServer(create_app(config, clock=clock))) as client:
        assert (await client.get("/health")).status == 200
        clock.now += timedelta(seconds=601)
        response = await client.get("/health")
        assert response.status == 503
        assert (await response.json())["status"] == "expired"


def test_a_bad_signing_key_fails_at_creation(tmp_path: Path, pki: Pki) -> None:
    config = load_registry(tmp_path, pki)
    config.signing_key.write_text("not a key")
    with pytest.raises(ConfigError, match="signing_key"):
        create_app(config)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.e2e
async def test_the_registry_process(tmp_path: Path, pki: Pki) -> None:
    port = _free_port()
    config_path = write_registry(tmp_path, pki, listen_port=port)
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
