"""From an empty registry and two fresh security servers to a cross-agency query, through
the command line and the APIs only; then a configuration-signing key rotation with traffic
flowing throughout.

Files written before the start are what an installer writes: each server's own TOML
configuration, the registry's TOML file, the development CA and the federation's key
passphrase file.  Each server's keys are made as an administrator makes them: ``xchange ss
keys generate`` (an encrypted key and a request), ``xchange ca issue``, ``xchange ss keys
import-cert``.  Everything the federation knows -- members, subsystems, servers, certificates,
clients, the trust anchor each server is installed with -- goes through ``xchange registry
...`` (admin API with a token), ``xchange ss register ...`` (signed management requests) and
``xchange registry anchor``; the service catalogue is what the provider's server publishes
itself when it starts.  The CA's OCSP responder runs throughout: the servers staple its
answers to every message.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from certs.keys import load_private_key
from certs.pkcs8 import PEM_BEGIN
from xchange_cli.demo import query
from xchange_cli.federation import (
    CONSUMER,
    PROVIDER,
    Federation,
    RunningFederation,
    ServerFiles,
    build_federation,
)

# Some 40 commands run as processes: allow for a loaded machine beyond the 120 s default.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PERSON = "/persons/38001010001"


def xchange(*args: str, env: dict[str, str] | None = None) -> Any:
    done = subprocess.run([sys.executable, "-m", "xchange_cli", *args], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, check=False,
                          env=env)
    assert done.returncode == 0, f"xchange {' '.join(args)}:\n{done.stdout}{done.stderr}"
    try:
        return json.loads(done.stdout)
    except ValueError:
        return done.stdout.strip()


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def make_keys(fed: Federation, server: ServerFiles) -> None:
    """A server's auth and signing keys and certificates, the way docs/pki.md tells."""
    passphrase = ["--passphrase-file", str(fed.key_passphrase_file)]
    d, agency = server.directory, server.agency
    for kind, ident in (("auth", agency.server), ("sign", agency.member)):
        xchange("ss", "keys", "generate", "--kind", kind, "--id", str(ident), "--member-name",
                agency.name, "--out-key", str(d / f"{kind}.key"), "--out-csr",
                str(d / f"{kind}.csr"), *passphrase)
        xchange("ca", "issue", str(fed.ca.directory), "--csr", str(d / f"{kind}.csr"),
                "--profile", kind, "--out", str(d / f"{kind}.issued"), *passphrase)
        xchange("ss", "keys", "import-cert", "--kind", kind, "--key", str(d / f"{kind}.key"),
                "--cert", str(d / f"{kind}.issued"), "--out", str(d / f"{kind}.pem"),
                *passphrase)


class Onboarded:
    def __init__(self, running: RunningFederation, token: str) -> None:
        self.running, self.token = running, token
        self.fed: Federation = running.federation

    def admin(self, *args: str) -> Any:
        return xchange("registry", *args, "--url", self.fed.registry_url, "--token", self.token)

    def ask(self) -> int:
        consumer = self.fed.servers[1]
        return query(consumer.client_proxy_url, str(self.fed.services["persons"]), PERSON,
                     str(self.fed.allowed_client)).status


@pytest.fixture(scope="module")
def onboarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Onboarded]:
    fed = build_federation(tmp_path_factory.mktemp("onboarding"), empty_registry=True,
                           server_keys=False, registry_regenerate_seconds=0.5,
                           ss_refresh_seconds=0.5)
    running = RunningFederation(fed)
    try:
        running.start_provider()
        running.start_ocsp_responder()
        for server in fed.servers:
            make_keys(fed, server)
        # The registry's operator: an empty database, the first keys, a token for the officer.
        xchange("registry", "init", "--config", str(fed.registry_config), "--instance", "DEMO")
        running.start_registry()
        token = xchange("registry", "token", "--config", str(fed.registry_config), "--subject",
                        "olivia", "--role", "registration_officer", "--role",
                        "security_officer", "--role", "system_administrator")
        yield Onboarded(running, token)
    finally:
        running.stop()


def test_from_an_empty_registry_to_a_cross_agency_query(onboarded: Onboarded) -> None:
    fed, admin = onboarded.fed, onboarded.admin
    # 1. Trust services and settings (security officer, system administrator).
    admin("settings", "set", "conf_refresh_seconds=1", "conf_expiry_seconds=30")
    admin("ca", "add", "DEMO development CA", str(fed.ca.cert_path), "--ocsp-url",
          fed.ocsp_url)
    # 2. Members and subsystems (registration officer).
    admin("member-class", "add", "GOV", "--description", "government agencies")
    for agency in (PROVIDER, CONSUMER):
        admin("member", "add", str(agency.member), "--name", agency.name)
        for code in agency.subsystems:
            admin("subsystem", "add", str(agency.subsystem(code)))

    # 3. Each new server asks to register its auth certificate; the officer approves.
    for server in fed.servers:
        sent = xchange("ss", "register", "auth-cert", "--config", str(server.config),
                       "--registry", fed.registry_url)
        assert sent["state"] == "pending"
        status = xchange("ss", "register", "status", "--config", str(server.config),
                         "--registry", fed.registry_url, sent["request_id"])
        assert status["state"] == "pending"
    pending = admin("requests", "list", "--state", "pending")["items"]
    assert sorted(r["server"] for r in pending) == sorted(str(s.agency.server)
                                                          for s in fed.servers)
    for request in pending:
        assert admin("requests", "approve", str(request["id"]), "--comment",
                     "identity checked")["state"] == "approved"

    # 4. Clients: the federation approves a server owner's own subsystems automatically.
    admin("settings", "set", "auto_approve_clients=true")
    for server in fed.servers:
        for code in server.agency.subsystems:
            sent = xchange("ss", "register", "client", "--config", str(server.config),
                           "--registry", fed.registry_url, "--client",
                           str(server.agency.subsystem(code)))
            assert sent["state"] == "approved"

    # 5. The anchor each server is installed with; then the servers start.
    for i, server in enumerate(fed.servers):
        xchange("registry", "anchor", "--url", fed.registry_url, "--out",
                str(server.directory / "anchor.json"))
        onboarded.running.start_server(i)

    # 6. The provider's server publishes its services to the catalogue itself when it
    #    starts (signed by its member, approved at once); then the query.
    persons = fed.services["persons"]

    def catalogue() -> dict[str, dict[str, Any]]:
        return {s["id"]: s for s in admin("service", "list")["items"]}

    wait_for(lambda: str(persons) in catalogue())
    assert set(catalogue()) == {str(s) for s in fed.services.values()}
    assert catalogue()[str(persons)]["published_by"] == str(fed.servers[0].agency.server)
    wait_for(lambda: onboarded.ask() == 200)
    denied = query(fed.servers[1].client_proxy_url, str(persons), PERSON,
                   str(fed.denied_client))
    assert denied.headers["X-Road-Error"] == "server.serverproxy.access_denied"

    # Everything above is in the audit log under the officer's name or the request's.
    audit = admin("audit", "--actor", "olivia", "--limit", "200")["items"]
    actions = {e["action"] for e in audit}
    assert {"member.create", "subsystem.create", "ca.add", "management.approved",
            "server.create", "server.auth_cert.add"} <= actions


def test_key_rotation_with_traffic_flowing(onboarded: Onboarded, tmp_path: Path) -> None:
    """announce a new key, activate it, retire the old one: every query answers 200."""
    assert onboarded.ask() == 200
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            statuses.append(onboarded.ask())
            time.sleep(0.05)

    fed = onboarded.fed

    def learnt(count: int) -> Callable[[], bool]:
        """Every server trusts ``count`` keys (written with each configuration it accepts)."""
        def check() -> bool:
            files = [s.directory / "state" / "conf-signing-keys.pem" for s in fed.servers]
            return all(f.exists() and f.read_text().count("BEGIN CERTIFICATE") == count
                       for f in files)
        return check

    def signatures() -> int:
        with urllib.request.urlopen(f"{fed.registry_url}/globalconf") as response:
            return len(json.loads(response.read())["signatures"])

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        (old,) = onboarded.admin("keys", "list")
        new = onboarded.admin("keys", "add")
        assert new["state"] == "announced"
        # The running registry wrote the new key encrypted, under the federation's passphrase.
        keys = sorted((fed.registry_config.parent / "keys").glob("*.key"))
        assert len(keys) == 3  # the admin-token key and two configuration-signing keys
        for key in keys:
            load_private_key(key, fed.key_passphrase)
            assert key.read_bytes().startswith(PEM_BEGIN.encode())
        wait_for(learnt(2))  # the old key announced the new one to every server
        onboarded.admin("keys", "activate", new["key_id"])
        wait_for(lambda: signatures() == 2)
        time.sleep(1)  # a couple of downloads with both signatures
        onboarded.admin("keys", "retire", old["key_id"])
        wait_for(lambda: signatures() == 1)
        wait_for(learnt(1))  # the new key alone, from a document the new key alone signed
        time.sleep(1)
    finally:
        stop.set()
        worker.join(30)
    assert len(statuses) > 20 and set(statuses) == {200}, statuses
    # The servers remember the new key across a restart.
    onboarded.running.stop_process(fed.servers[1].agency.server_code)
    onboarded.running.start_server(1)
    wait_for(lambda: onboarded.ask() == 200)
    # The logs still verify: the configuration they are checked with is signed by the new key.
    for server in fed.servers:
        assert "signatures verified" in xchange("ss", "verify-log", "--config",
                                                str(server.config))
