"""End to end: a service put on the federation only through the admin CLI, rights per
endpoint, a global group, revocation, and the metadata services through the federation."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from certs.keys import (
    generate_private_key,
    self_signed_tls_certificate,
    unsafe_write_plaintext_key,
    write_certificate,
)
from tests.e2e.conftest import wait_for
from xchange.identifiers import NS_ID, NS_XROAD
from xchange_cli.demo import Answer, query
from xchange_cli.federation import (
    CONSUMER,
    PROVIDER,
    STATISTICS_GROUP,
    Federation,
    RunningFederation,
    ServerFiles,
    build_federation,
)
from xchange_cli.main import main

pytestmark = pytest.mark.e2e

REGISTER = PROVIDER.subsystem("population-register")
API = f"{REGISTER}/register-api"
BENEFITS = str(CONSUMER.subsystem("benefits"))
ANALYTICS = str(CONSUMER.subsystem("analytics"))


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFederation]:
    fed = build_federation(tmp_path_factory.mktemp("admin-federation"), conf_expiry_seconds=60,
                           conf_refresh_seconds=1, registry_regenerate_seconds=0.5,
                           ss_refresh_seconds=0.5)
    with RunningFederation(fed) as running:
        yield running


@pytest.fixture(scope="module")
def fed(federation: RunningFederation) -> Federation:
    return federation.federation


def xchange(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    """Run ``xchange ARGS`` in-process; return its JSON output (or text)."""
    capsys.readouterr()
    status = main(list(args))
    out, err = capsys.readouterr()
    assert status == 0, err
    try:
        return json.loads(out)
    except ValueError:
        return out.strip()


@pytest.fixture(scope="module")
def token_file(fed: Federation, tmp_path_factory: pytest.TempPathFactory) -> str:
    from security_server.admin_api import audience_for
    from security_server.admin_keys import admin_private_key
    from security_server.config import SecurityServerConfig
    from security_server.runtime import utc_now
    from xchange.adminauth import issue_token

    # What `xchange ss admin-token` prints (that command is exercised below too).
    provider = fed.servers[0]
    config = SecurityServerConfig.from_file(provider.config).from_env()
    token = issue_token(admin_private_key(config), subject="alice",
                        roles=["service-administrator", "auditor"],
                        audience=audience_for(str(provider.agency.server)),
                        issued_at=utc_now(), lifetime=timedelta(hours=1))
    path = tmp_path_factory.mktemp("token") / "token"
    path.write_text(token, encoding="utf-8")
    return f"@{path}"


def admin(fed: Federation, capsys: pytest.CaptureFixture[str], token: str, *args: str) -> Any:
    return xchange(capsys, *args, "--url", fed.servers[0].admin_url, "--token", token)


def ask(fed: Federation, path: str, client: str = BENEFITS,
        service: str = API, **kw: Any) -> Answer:
    return query(fed.servers[1].client_proxy_url, service, path, client, **kw)


def catalogue(fed: Federation, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """REGISTER's entries in the registry's catalogue, by code."""
    token = xchange(capsys, "registry", "token", "--config", str(fed.registry_config),
                    "--subject", "olivia", "--role", "observer")
    page = xchange(capsys, "registry", "service", "list", "--provider", str(REGISTER),
                   "--url", fed.registry_url, "--token", token)
    return {s["code"]: s for s in page["items"]}


def test_toml_services_are_published_when_the_server_starts(
        fed: Federation, capsys: pytest.CaptureFixture[str], token_file: str) -> None:
    """First in this module, before any admin change: the services imported from the TOML
    file reach the registry's catalogue because the server published them at start."""
    wait_for(lambda: {"persons", "slow", "down"} <= set(catalogue(fed, capsys)))

    def published() -> tuple[str, int]:
        state = admin(fed, capsys, token_file, "ss", "catalogue", "show", str(REGISTER))
        return state["state"], state["services"]

    # The registry may hold the services a moment before the server has read its answer.
    wait_for(lambda: published() == ("published", 3))


def test_admin_token_command(fed: Federation, capsys: pytest.CaptureFixture[str]) -> None:
    token = xchange(capsys, "ss", "admin-token", "--config", str(fed.servers[0].config),
                    "--subject", "bob", "--role", "observer")
    clients = admin(fed, capsys, token, "ss", "client", "list")
    assert {c["id"] for c in clients} >= {str(REGISTER), str(PROVIDER.member)}
    assert main(["ss", "client", "add", "DEMO/GOV/70000001/x", "--url",
                 fed.servers[0].admin_url, "--token", token]) == 1
    assert "admin.forbidden" in capsys.readouterr().err


def test_openapi_service_endpoint_rights_group_and_revocation(
        fed: Federation, capsys: pytest.CaptureFixture[str], token_file: str) -> None:
    provider_url = f"http://127.0.0.1:{fed.provider_port}"
    desc = admin(fed, capsys, token_file, "ss", "description", "add", str(REGISTER),
                 "--type", "OPENAPI3", "--description-url", f"{provider_url}/openapi.json",
                 "--service-code", "register-api", "--service-url", provider_url + "/")
    endpoints = {(e["method"], e["path"]) for e in desc["services"][0]["endpoints"]}
    assert endpoints == {("GET", "/persons"), ("GET", "/persons/*"), ("POST", "/echo")}

    # deny by default: the new service has no rights yet
    assert ask(fed, "/persons/38001010001").headers.get("X-Road-Error") == \
        "server.serverproxy.access_denied"

    admin(fed, capsys, token_file, "ss", "access", "grant", API, BENEFITS,
          "--method", "GET", "--path", "/persons/*")
    granted = ask(fed, "/persons/38001010001")
    assert granted.status == 200, granted.body
    assert granted.json()["name"] == "Mari Maasikas"
    # another endpoint of the same service, and spellings that try to escape the grant
    for path in ("/persons", "/persons?name=x", "/echo", "/persons/1/x", "/Persons/1",
                 "/persons/%2E%2E", "/persons//1"):
        answer = ask(fed, path)
        assert answer.status in (400, 403), (path, answer.status)
    assert ask(fed, "/persons").headers.get("X-Road-Error") == \
        "server.serverproxy.access_denied"

    # a subsystem in a granted global group passes
    assert ask(fed, "/persons/38001010001", ANALYTICS).status == 403
    admin(fed, capsys, token_file, "ss", "access", "grant", API, STATISTICS_GROUP,
          "--method", "GET", "--path", "/persons/*")
    assert ask(fed, "/persons/38001010001", ANALYTICS).status == 200

    # revocation: the very next request is denied
    admin(fed, capsys, token_file, "ss", "access", "revoke", API, BENEFITS,
          "--method", "GET", "--path", "/persons/*")
    revoked = ask(fed, "/persons/38001010001")
    assert revoked.headers.get("X-Road-Error") == "server.serverproxy.access_denied"
    assert ask(fed, "/persons/38001010001", ANALYTICS).status == 200

    # every change is in the audit log, with who made it
    audit = admin(fed, capsys, token_file, "ss", "audit")
    mine = [(a["actor"], a["action"]) for a in audit if a["actor"] == "alice"]
    assert mine == [("alice", "add_description"), ("alice", "grant"), ("alice", "grant"),
                    ("alice", "revoke")]


def test_list_clients_xml_and_json(fed: Federation) -> None:
    url = f"{fed.servers[1].client_proxy_url}/listClients"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/xml")
        root = etree.fromstring(resp.read())
    assert root.tag == f"{{{NS_XROAD}}}clientList"
    ids = [(m.find(f"{{{NS_XROAD}}}id").get(f"{{{NS_ID}}}objectType"),  # type: ignore[union-attr]
            m.findtext(f"{{{NS_XROAD}}}id/{{{NS_ID}}}subsystemCode"))
           for m in root.iterfind(f"{{{NS_XROAD}}}member")]
    assert ("SUBSYSTEM", "benefits") in ids and ("MEMBER", None) in ids
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        doc = json.loads(resp.read())
    assert {"id": {"object_type": "SUBSYSTEM", "xroad_instance": "DEMO", "member_class": "GOV",
                   "member_code": "70000002", "subsystem_code": "benefits"},
            "name": "Social Insurance Board"} in doc["member"]
    for suffix, listed in (("?xRoadInstance=DEMO", True), ("?xRoadInstance=OTHER", False),
                          ("?xRoadInstance=", False)):
        with urllib.request.urlopen(url + suffix, timeout=10) as resp:
            members = etree.fromstring(resp.read()).findall(f"{{{NS_XROAD}}}member")
        assert bool(members) is listed, suffix


def test_metadata_services_through_the_federation(
        fed: Federation, capsys: pytest.CaptureFixture[str], token_file: str) -> None:
    provider = str(REGISTER)
    listed = ask(fed, "", service=f"{provider}/listMethods")
    assert listed.status == 200, listed.body
    codes = {s["service_code"] for s in listed.json()["service"]}
    assert {"persons", "slow", "down"} <= codes
    assert not codes & {"listMethods", "allowedMethods", "getOpenAPI"}
    allowed = ask(fed, "", ANALYTICS, service=f"{provider}/allowedMethods").json()["service"]
    assert [s["service_code"] for s in allowed] == ["register-api"]  # via its global group
    assert allowed[0]["service_type"] == "OPENAPI"
    assert allowed[0]["endpoint_list"] == [{"method": "GET", "path": "/persons/*"}]
    benefits = {s["service_code"]: s for s in
                ask(fed, "", service=f"{provider}/allowedMethods").json()["service"]}
    assert "persons" in benefits and "register-api" not in benefits  # revoked above
    doc = ask(fed, "?serviceCode=register-api", service=f"{provider}/getOpenAPI")
    assert doc.status == 200
    assert doc.json()["info"]["title"] == "Population register"
    missing = ask(fed, "?serviceCode=nope", service=f"{provider}/getOpenAPI")
    assert missing.headers.get("X-Road-Error") == "server.serverproxy.unknown_service"


def _https(fed: Federation, client: str, ca_pem: str, cert: tuple[Path, Path] | None
           ) -> Answer:
    """Call the consumer's client proxy over HTTPS, trusting its internal certificate."""
    ctx = ssl.create_default_context(cadata=ca_pem)
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    url = (f"https://127.0.0.1:{fed.servers[1].client_proxy_tls_port}/r1/{API}"
           "/persons/38001010001")
    request = urllib.request.Request(url, headers={"X-Road-Client": client})
    try:
        with urllib.request.urlopen(request, timeout=30, context=ctx) as resp:
            return Answer(resp.status, dict(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as err:
        return Answer(err.code, dict(err.headers.items()), err.read())
    except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as err:
        return Answer(0, {}, repr(err).encode())  # refused during the TLS handshake


def _is_cert(directory: Path, name: str) -> tuple[Path, Path]:
    key = generate_private_key()
    cert = self_signed_tls_certificate(key, name, now=datetime.now(UTC), client=True)
    unsafe_write_plaintext_key(directory / f"{name}.key", key)  # the IS's key, not ours
    write_certificate(directory / f"{name}.pem", cert)
    return directory / f"{name}.pem", directory / f"{name}.key"


def test_is_connection_security(fed: Federation, capsys: pytest.CaptureFixture[str],
                                tmp_path: Path) -> None:
    """analytics is switched to HTTPS with a registered client certificate: plain HTTP and
    HTTPS without the certificate are refused with a clear code; with it, the call passes."""
    consumer = fed.servers[1]
    token = xchange(capsys, "ss", "admin-token", "--config", str(consumer.config),
                    "--subject", "sec", "--role", "security-officer")

    def cli(*args: str) -> Any:
        return xchange(capsys, *args, "--url", consumer.admin_url, "--token", token)

    internal = cli("ss", "internal-cert")["pem"]
    assert ask(fed, "/persons/38001010001", ANALYTICS).status == 200  # HTTP, as seeded
    cli("ss", "client", "update", ANALYTICS, "--connection", "HTTPS_AUTH")
    refused = "server.clientproxy.is_authentication_failed"
    plain = ask(fed, "/persons/38001010001", ANALYTICS)
    assert (plain.status, plain.headers.get("X-Road-Error")) == (401, refused)
    no_cert = _https(fed, ANALYTICS, internal, None)
    assert (no_cert.status, no_cert.headers.get("X-Road-Error")) == (401, refused)
    assert b"certificate" in no_cert.body

    registered, stranger = _is_cert(tmp_path, "analytics-is"), _is_cert(tmp_path, "other-is")
    cli("ss", "client", "cert-add", ANALYTICS, str(registered[0]))
    assert _https(fed, ANALYTICS, internal, registered).status == 200
    wrong = _https(fed, ANALYTICS, internal, stranger)
    assert wrong.status == 401 or wrong.status == 0  # refused, in TLS or by the check
    # benefits stays HTTP; a certificate of another client does not make it analytics
    assert ask(fed, "/persons/38001010001").status in (200, 403)
    cli("ss", "client", "update", ANALYTICS, "--connection", "HTTPS")
    assert _https(fed, ANALYTICS, internal, None).status == 200
    cli("ss", "client", "update", ANALYTICS, "--connection", "HTTP")


@contextlib.contextmanager
def _tls_provider_system(directory: Path, trusted_client_pem: str) -> Iterator[tuple[int, Path]]:
    """A provider system over HTTPS with a self-signed certificate, answering any GET with
    a small JSON document, and refusing any client but the one whose certificate is
    ``trusted_client_pem`` (as a provider system that pins its security server does).
    Yields its port and its certificate."""
    key = generate_private_key()
    cert = self_signed_tls_certificate(key, "provider-system", now=datetime.now(UTC),
                                       hosts=("127.0.0.1",))
    unsafe_write_plaintext_key(directory / "provider-system.key", key)  # a test system's
    write_certificate(directory / "provider-system.pem", cert)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(directory / "provider-system.pem", directory / "provider-system.key")
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=trusted_client_pem)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = b'{"over": "https"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], directory / "provider-system.pem"
    finally:
        server.shutdown()
        server.server_close()


def test_provider_system_over_https(fed: Federation, capsys: pytest.CaptureFixture[str],
                                    tmp_path: Path) -> None:
    """The provider's server calls its provider system over HTTPS: it presents its
    internal TLS certificate, which the system requires, and trusts the system's
    self-signed certificate once that is registered for the provider's subsystem."""
    provider = fed.servers[0]
    token = xchange(capsys, "ss", "admin-token", "--config", str(provider.config),
                    "--subject", "sec", "--role", "security-officer",
                    "--role", "service-administrator")

    def cli(*args: str) -> Any:
        return xchange(capsys, *args, "--url", provider.admin_url, "--token", token)

    persons = str(fed.services["persons"])
    before = cli("ss", "service", "show", persons)["url"]
    internal = cli("ss", "internal-cert")["pem"]
    with _tls_provider_system(tmp_path, internal) as (port, system_cert):
        cli("ss", "service", "update", persons, "--service-url", f"https://127.0.0.1:{port}/")
        try:
            # Not registered, and not in the system's trust store: refused.
            untrusted = ask(fed, "/persons/38001010001", service=persons)
            assert untrusted.headers.get("X-Road-Error") == \
                "server.serverproxy.service_failed", untrusted.body
            cli("ss", "client", "cert-add", str(REGISTER), str(system_cert))
            trusted = ask(fed, "/persons/38001010001", service=persons)
            assert trusted.status == 200, trusted.body
            assert trusted.json() == {"over": "https"}
        finally:
            cli("ss", "service", "update", persons, "--service-url", before)
        der = x509.load_pem_x509_certificate(system_cert.read_bytes()).public_bytes(
            serialization.Encoding.DER)
        cli("ss", "client", "cert-delete", str(REGISTER), hashlib.sha256(der).hexdigest())
    assert ask(fed, "/persons/38001010001", service=persons).status == 200


def test_backup_and_restore_through_the_cli(fed: Federation, capsys: pytest.CaptureFixture[str],
                                            token_file: str, tmp_path: Path) -> None:
    provider = fed.servers[0]
    sysadmin = xchange(capsys, "ss", "admin-token", "--config", str(provider.config),
                       "--subject", "ops", "--role", "system-administrator")
    secret = tmp_path / "passphrase"
    secret.write_text("a long operator passphrase\n", encoding="utf-8")
    backup = tmp_path / "ss-population.backup"
    admin(fed, capsys, sysadmin, "ss", "backup", "--out", str(backup),
          "--passphrase-file", str(secret))
    assert ask(fed, "/persons/38001010001", ANALYTICS).status == 200
    admin(fed, capsys, token_file, "ss", "access", "revoke", API, STATISTICS_GROUP,
          "--method", "GET", "--path", "/persons/*")
    assert ask(fed, "/persons/38001010001", ANALYTICS).status == 403
    # an altered backup is refused and changes nothing
    altered = tmp_path / "altered.backup"
    data = bytearray(backup.read_bytes())
    data[-5] ^= 1
    altered.write_bytes(bytes(data))
    assert main(["ss", "restore", str(altered), "--passphrase-file", str(secret), "--url",
                 provider.admin_url, "--token", sysadmin]) == 1
    assert "admin.invalid_backup" in capsys.readouterr().err
    assert ask(fed, "/persons/38001010001", ANALYTICS).status == 403
    restored = admin(fed, capsys, sysadmin, "ss", "restore", str(backup), "--passphrase-file",
                     str(secret))
    assert restored["restored"]["access_rights"] >= 4
    assert ask(fed, "/persons/38001010001", ANALYTICS).status == 200


def test_services_are_published_to_the_registrys_catalogue(
        federation: RunningFederation, fed: Federation, capsys: pytest.CaptureFixture[str],
        token_file: str) -> None:
    """An OpenAPI service added through the admin CLI appears, with its endpoints, in the
    registry's catalogue (sent by the provider's server, signed by its member), and
    disappears when its description is deleted; with the registry down, the change is made
    at once and published later."""
    registry_token = xchange(capsys, "registry", "token", "--config", str(fed.registry_config),
                             "--subject", "olivia", "--role", "observer")

    def listed() -> dict[str, Any]:
        return catalogue(fed, capsys)

    provider_url = f"http://127.0.0.1:{fed.provider_port}"
    desc = admin(fed, capsys, token_file, "ss", "description", "add", str(REGISTER),
                 "--type", "OPENAPI3", "--description-url", f"{provider_url}/openapi.json",
                 "--service-code", "catalogue-api", "--service-url", provider_url + "/")
    wait_for(lambda: "catalogue-api" in listed())
    entry = listed()["catalogue-api"]
    assert (entry["type"], entry["kind"], entry["title"]) == ("OPENAPI", "REST",
                                                            "Population register")
    assert entry["published_by"] == str(fed.servers[0].agency.server)
    assert {(e["method"], e["path"]) for e in entry["endpoints"]} == \
        {("GET", "/persons"), ("GET", "/persons/*"), ("POST", "/echo")}
    assert {"persons", "slow", "down"} <= set(listed())  # the whole list, TOML services too
    state = admin(fed, capsys, token_file, "ss", "catalogue", "show", str(REGISTER))
    wait_for(lambda: admin(fed, capsys, token_file, "ss", "catalogue", "show",
                           str(REGISTER))["state"] == "published")
    assert "catalogue-api" in {s["code"] for s in state["catalogue"]}

    # the registry recorded it as an automatically approved management request
    requests = xchange(capsys, "registry", "requests", "list", "--state", "approved",
                       "--url", fed.registry_url, "--token", registry_token)
    assert any(r["kind"] == "service_catalogue_update" and r["member"] == str(PROVIDER.member)
               for r in requests["items"])

    admin(fed, capsys, token_file, "ss", "description", "delete", str(desc["id"]))
    wait_for(lambda: "catalogue-api" not in listed())
    assert "persons" in listed()

    # the registry down: the administrator's change does not wait for it
    federation.stop_process("registry")
    try:
        started = time.monotonic()
        admin(fed, capsys, token_file, "ss", "description", "add", str(REGISTER),
              "--type", "REST", "--description-url", provider_url + "/", "--service-code",
              "offline-api")
        assert time.monotonic() - started < 5
        wait_for(lambda: admin(fed, capsys, token_file, "ss", "catalogue", "show",
                               str(REGISTER))["state"] == "failed")
        failed = admin(fed, capsys, token_file, "ss", "catalogue", "show", str(REGISTER))
        assert failed["due"] and "could not be reached" in failed["last_error"]
    finally:
        federation.start_registry()
    published = admin(fed, capsys, token_file, "ss", "catalogue", "publish", str(REGISTER))
    assert (published["state"], published["last_error"]) == ("published", None)
    assert "offline-api" in listed()

    # on demand, from the command line, signed with the server's own configuration
    answer = xchange(capsys, "ss", "register", "services", "--config",
                     str(fed.servers[0].config), "--client", str(REGISTER))
    assert answer["state"] == "published" and answer["last_error"] is None
    assert "catalogue-api" not in {s["code"] for s in answer["catalogue"]}
    assert "offline-api" in {s["code"] for s in answer["catalogue"]}
    capsys.readouterr()
    main(["ss", "status", "--config", str(fed.servers[0].config)])
    assert f"{REGISTER}: published" in capsys.readouterr().out


def _conf_version(server: ServerFiles) -> int:
    """The version of the global configuration the server has in force."""
    with urllib.request.urlopen(server.client_proxy_url + "/health", timeout=10) as resp:
        return int(json.loads(resp.read())["globalconf_version"])


def _published_with(fed: Federation, server: ServerFiles, client: str) -> int | None:
    """The version of the registry's configuration, if it has ``client`` on ``server``."""
    with urllib.request.urlopen(fed.registry_url + "/globalconf", timeout=10) as resp:
        payload = json.loads(resp.read())["signed"]
    for entry in payload["security_servers"]:
        if entry["id"] == str(server.agency.server) and client in entry["clients"]:
            return int(payload["version"])
    return None


def test_deleting_a_registered_client_sends_its_deletion_request_to_the_registry(
        federation: RunningFederation, fed: Federation,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A subsystem registered on the provider's server and deleted there: the server asks
    the registry to forget it (a client_delete signed by its member) before removing it, and
    does not remove it while the registry cannot be asked; the officer's approval takes it
    off the server in the registry and in global configuration."""
    archive = str(PROVIDER.subsystem("archive"))
    server = fed.servers[0]
    officer = xchange(capsys, "registry", "token", "--config", str(fed.registry_config),
                      "--subject", "olivia", "--role", "registration_officer")

    def registry(*args: str) -> Any:
        return xchange(capsys, "registry", *args, "--url", fed.registry_url, "--token",
                       officer)

    def hosted() -> set[str]:
        doc = registry("server", "show", str(server.agency.server))
        return {c["id"] if isinstance(c, dict) else c for c in doc["clients"]}

    token = xchange(capsys, "ss", "admin-token", "--config", str(server.config),
                    "--subject", "sofia", "--role", "security-officer")
    registry("subsystem", "add", archive)
    registry("client", "add", str(server.agency.server), archive)
    admin(fed, capsys, token, "ss", "client", "add", archive)
    # the registry publishes a configuration with the new client, and the server takes it
    wait_for(lambda: _published_with(fed, server, archive) is not None)
    published = _published_with(fed, server, archive)
    assert published is not None
    wait_for(lambda: _conf_version(server) >= published)
    assert archive in hosted()

    # the registry down: the deletion is refused, and the client stays
    federation.stop_process("registry")
    try:
        assert main(["ss", "client", "delete", archive, "--url", server.admin_url,
                     "--token", token]) == 1
        assert "admin.unregistration_failed" in capsys.readouterr().err
    finally:
        federation.start_registry()
    assert archive in {c["id"] for c in admin(fed, capsys, token, "ss", "client", "list")}

    deleted = admin(fed, capsys, token, "ss", "client", "delete", archive)
    sent = deleted["unregistration"]
    assert deleted["id"] == archive and sent["state"] == "pending"
    assert archive not in {c["id"] for c in admin(fed, capsys, token, "ss", "client", "list")}
    (request,) = [r for r in registry("requests", "list", "--state", "pending")["items"]
                  if r["request_id"] == sent["request_id"]]
    assert (request["kind"], request["member"]) == ("client_delete", str(PROVIDER.member))
    assert request["payload"]["client"] == archive
    assert archive in hosted()  # until an officer approves
    registry("requests", "approve", str(request["id"]), "--comment", "archive retired")
    assert archive not in hosted()
