"""A throwaway federation on one machine: files, keys and processes.

Used by ``xchange demo`` and by the end-to-end tests.  :func:`build_federation` writes into a
folder everything two agencies and a registry need -- a development CA, members' signing
keys, security servers' auth keys, the registry's configuration-signing key, and the TOML
configuration of every process -- and :class:`RunningFederation` starts each component as a
separate process (``xchange registry serve``, ``xchange ss serve``, the demo provider system)
on free loopback ports, waits until each is really serving, and stops them all.

The cast:

* **Population Register Agency** (``DEMO/GOV/70000001``) provides the ``persons`` service from
  its subsystem ``population-register`` through security server ``ss-population``;
* **Social Insurance Board** (``DEMO/GOV/70000002``) consumes it from its subsystem
  ``benefits`` (allowed) through ``ss-insurance``; its ``analytics`` subsystem is registered
  but has no right to the service (denied).  ``analytics`` is in the global group
  ``DEMO/statistics``, which has no rights either until an administrator grants some.

The provider's security server also runs its admin API (``admin_port``, token key
``admin.key`` in its folder).  The demo's information systems call their security servers
over plain HTTP, so every demo client's connection type is ``HTTP`` (``[is_connection]``);
the client proxies also serve HTTPS (``client_proxy_tls_port``) with a generated internal
certificate.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from certs.ca import DevCA
from certs.keys import (
    generate_private_key,
    random_passphrase,
    read_secret_file,
    write_certificate,
    write_private_key,
    write_secret_file,
)
from security_server.logkeys import new_key_file
from xchange.identifiers import ClientId, SecurityServerId, ServiceId

__all__ = [
    "Agency",
    "Federation",
    "ManagedProcess",
    "RunningFederation",
    "TokenSlot",
    "build_federation",
    "free_port",
    "use_ports",
]

INSTANCE = "DEMO"
STATISTICS_GROUP = "DEMO/statistics"


_PORTS = range(20000, 32000)
"""Below Linux's ephemeral range (32768-60999): a port handed out here is not taken a moment
later by some process's outgoing connection, as a port the kernel picks for bind(0) can be."""
_issued: set[int] = set()
_ports = _PORTS


def use_ports(ports: range) -> None:
    """Hand out ports from ``ports`` (a part of 20000-31999) only.  A test run with several
    worker processes gives each worker a part of its own, so that two workers never both
    hand out a port that neither has bound yet."""
    global _ports
    if not ports or ports.start < _PORTS.start or ports.stop > _PORTS.stop:
        raise ValueError(f"ports {ports} are not a part of {_PORTS}")
    _ports = ports


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1, never handed out twice by this
    process."""
    for _ in range(200):
        port = secrets.choice(_ports)
        if port in _issued:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _issued.add(port)
        return port
    raise OSError(f"no free port found in {_ports.start}-{_ports.stop - 1}")


def _toml(value: Any) -> str:
    """A TOML value for the simple types these files use (JSON strings are TOML strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def _section(name: str, values: dict[str, Any], *, array: bool = False) -> str:
    head = f"[[{name}]]" if array else f"[{name}]"
    return "\n".join([head, *(f"{k} = {_toml(v)}" for k, v in values.items())]) + "\n\n"


@dataclass(frozen=True)
class Agency:
    member: ClientId
    name: str
    subsystems: tuple[str, ...]
    server_code: str

    @property
    def server(self) -> SecurityServerId:
        return SecurityServerId(self.member, self.server_code)

    def subsystem(self, code: str) -> ClientId:
        return self.member.subsystem_of(code)


PROVIDER = Agency(ClientId(INSTANCE, "GOV", "70000001"), "Population Register Agency",
                  ("population-register",), "ss-population")
CONSUMER = Agency(ClientId(INSTANCE, "GOV", "70000002"), "Social Insurance Board",
                  ("benefits", "analytics"), "ss-insurance")


@dataclass
class ServerFiles:
    agency: Agency
    directory: Path
    config: Path
    client_proxy_port: int
    server_proxy_port: int
    database: Path
    log_keys: Path | None = None
    """The message log's key file, if its log is encrypted."""
    admin_port: int | None = None
    client_proxy_tls_port: int | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def client_proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.client_proxy_port}"


@dataclass
class Federation:
    """Everything :func:`build_federation` wrote, and where the processes will listen."""

    root: Path
    ca: DevCA
    registry_config: Path
    registry_port: int
    registry_data: Path
    provider_port: int
    ocsp_port: int
    tsa_port: int
    tsa_key: Path
    tsa_cert: Path
    """The TSA certificate, then the CA's."""
    servers: list[ServerFiles]
    services: dict[str, ServiceId]
    allowed_client: ClientId
    denied_client: ClientId
    key_passphrase_file: Path
    """The passphrase of every key file of the federation (mode 0600)."""
    adapter_config: Path | None = None
    """With an adapter: its configuration; the ``persons`` service is then the adapter's
    (:mod:`xchange_cli.demo_adapter`) instead of the demo provider system's."""
    adapter_port: int | None = None

    @property
    def key_passphrase(self) -> bytes:
        return read_secret_file(self.key_passphrase_file)

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.registry_port}"

    @property
    def ocsp_url(self) -> str:
        return f"http://127.0.0.1:{self.ocsp_port}/"

    @property
    def tsa_url(self) -> str:
        return f"http://127.0.0.1:{self.tsa_port}/"

    def describe(self) -> dict[str, Any]:
        """The ``demo.json`` document (see the README)."""
        return {
            "instance": INSTANCE,
            "registry_url": self.registry_url,
            "security_servers": [
                {"id": str(s.agency.server), "client_proxy_url": s.client_proxy_url,
                 "server_proxy_address": f"127.0.0.1:{s.server_proxy_port}",
                 "config": str(s.config)}
                for s in self.servers
            ],
            "consumer": {"client": str(self.allowed_client), "security_server": 1},
            "provider_service": {"id": str(self.services["persons"]),
                                 "example_path": "/persons/38001010001"},
            "denied_client": {"client": str(self.denied_client), "security_server": 1},
            "provider_system_url": f"http://127.0.0.1:{self.adapter_port or self.provider_port}",
        }


@dataclass(frozen=True)
class TokenSlot:
    """A PKCS#11 token (already initialised) to keep the consumer's signing key in."""

    module: Path
    token_label: str
    pin: bytes


def _prepare_registry(config_path: Path, data_path: Path, now: datetime) -> None:
    """``xchange registry init`` and ``import``, in this process: an initialised database
    with the data file loaded, and the registry's first signing and admin-token keys
    (encrypted under the passphrase the registry's configuration names)."""
    from sqlmodel import Session

    from registry.bootstrap import import_data, init_registry
    from registry.config import RegistryConfig
    from registry.db import opened_engine
    from registry.service import RegistryService

    config = RegistryConfig.from_file(config_path).from_env()
    with opened_engine(config.database_url) as engine:
        init_registry(config, engine, INSTANCE, actor="demo", now=now)
        with Session(engine) as session:
            import_data(RegistryService(session, actor="demo", now=now), data_path)
            session.commit()


def build_federation(
    root: Path,
    *,
    now: datetime | None = None,
    conf_expiry_seconds: int = 600,
    conf_refresh_seconds: int = 60,
    registry_regenerate_seconds: float | None = None,
    ss_refresh_seconds: float = 60.0,
    service_timeout: float = 10.0,
    slow_service_timeout: float = 2.0,
    database_urls: Sequence[str] | None = None,
    empty_registry: bool = False,
    server_keys: bool = True,
    ocsp_freshness_seconds: int = 3600,
    ocsp_refresh_seconds: float = 1200.0,
    ocsp_retry_seconds: float = 60.0,
    timestamping_interval_seconds: int = 60,
    timestamping: str = "batch",
    timestamping_max_failure_seconds: float = 14400.0,
    consumer_signing_token: TokenSlot | None = None,
    max_body_bytes: int | None = None,
    encrypt_logs: bool = True,
    adapter: bool = False,
    signing_batch_max: int | None = None,
    event_loop: str | None = None,
) -> Federation:
    """Write a two-agency federation into ``root`` (which must be empty or absent).

    The federation has one time-stamping authority, certified by the development CA and
    approved in global configuration; its key and certificate are in ``root/tsa``.  Message
    logs are encrypted at rest (a key file per server, ``messagelog-keys.toml``) unless
    ``encrypt_logs`` is false.

    Message logs are SQLite files in each server's folder unless ``database_urls`` gives one
    URL per server (provider's first).  Every key file is encrypted under one random
    passphrase, kept in ``root/keys.passphrase`` (0600), which the configurations name (the
    registry's keys too).  With ``empty_registry`` the registry's database is left alone (not
    even initialised): the caller onboards everything through the CLI.  With ``server_keys``
    false (only with ``empty_registry``), the servers' auth and signing keys and certificates
    are not made either: the caller makes them as an installer does (``xchange ss keys
    generate``, ``xchange ca issue``, ``xchange ss keys import-cert``) under the names the
    configurations give (``auth.key``, ``auth.pem``, ``sign.key``, ``sign.pem``).  With
    ``consumer_signing_token`` the consumer's signing key is generated inside that token
    instead, and its certificate issued from a request signed there.  ``max_body_bytes``
    overrides the servers' default body limit (the benchmark sends a body larger than it).
    With ``adapter`` the ``persons`` service is served by an adapter over a generated SQLite
    database (``root/adapter``, see :mod:`xchange_cli.demo_adapter`), as in ``xchange demo``.
    """
    if not server_keys and not empty_registry:
        raise ValueError("the registry's data names the servers' auth certificates: "
                         "server_keys=False needs empty_registry=True")
    now = now or datetime.now(UTC)
    root.mkdir(parents=True, exist_ok=True)
    passphrase_file = root / "keys.passphrase"
    passphrase = random_passphrase()
    write_secret_file(passphrase_file, passphrase + b"\n")
    ocsp_port = free_port()
    ca = DevCA.create(root / "ca", INSTANCE, now=now, ocsp_url=f"http://127.0.0.1:{ocsp_port}/",
                      key_passphrase=passphrase)
    registry_dir = root / "registry"
    registry_dir.mkdir()
    registry_port, provider_port, tsa_port = free_port(), free_port(), free_port()
    tsa_dir = root / "tsa"
    tsa_dir.mkdir()
    tsa_key, tsa_cert = ca.issue_tsa_cert(f"{INSTANCE} development TSA", now=now)
    write_private_key(tsa_dir / "tsa.key", tsa_key, passphrase)
    write_certificate(tsa_dir / "tsa.pem", tsa_cert, ca.certificate)

    persons = ServiceId(PROVIDER.subsystem("population-register"), "persons")
    services = {
        "persons": persons,
        "slow": ServiceId(persons.provider, "slow"),
        "down": ServiceId(persons.provider, "down"),
    }
    servers: list[ServerFiles] = []
    for agency in (PROVIDER, CONSUMER):
        d = root / agency.server_code
        d.mkdir()
        if server_keys:
            ca.issue_key_and_cert(d, "auth", agency.server, member_name=agency.name, now=now)
        if agency is CONSUMER and consumer_signing_token is not None:
            signing_in_token = _token_signing_key(ca, d, agency, consumer_signing_token, now)
        elif server_keys:
            ca.issue_key_and_cert(d, "sign", agency.member, member_name=agency.name, now=now)
        keys = d / "messagelog-keys.toml" if encrypt_logs else None
        if keys is not None:
            new_key_file(keys, "demo-1")
        servers.append(ServerFiles(agency, d, d / "security-server.toml", free_port(),
                                   free_port(), d / "messagelog.db", keys, free_port(),
                                   free_port()))
        write_private_key(d / "admin.key", generate_private_key(), passphrase)

    registry_data = {
        "instance": INSTANCE,
        "members": [{"id": str(a.member), "name": a.name, "subsystems": list(a.subsystems)}
                    for a in (PROVIDER, CONSUMER)],
        "security_servers": [
            {"id": str(s.agency.server), "address": f"127.0.0.1:{s.server_proxy_port}",
             "auth_certs": [str(s.directory / "auth.pem")],
             "clients": [str(s.agency.subsystem(c)) for c in s.agency.subsystems]}
            for s in servers
        ],
        "global_groups": [{"id": STATISTICS_GROUP, "description": "Statistics producers",
                           "members": [str(CONSUMER.subsystem("analytics"))]}],
        "approved_cas": [{"name": f"{INSTANCE} development CA",
                          "certificate": str(ca.cert_path),
                          "ocsp_url": f"http://127.0.0.1:{ocsp_port}/"}],
        "approved_tsas": [{"name": f"{INSTANCE} development TSA",
                           "url": f"http://127.0.0.1:{tsa_port}/",
                           "certificate": str(tsa_dir / "tsa.pem")}],
        "settings": {"conf_expiry_seconds": conf_expiry_seconds,
                     "conf_refresh_seconds": conf_refresh_seconds,
                     "ocsp_freshness_seconds": ocsp_freshness_seconds,
                     "timestamping_interval_seconds": timestamping_interval_seconds},
    }
    data_path = registry_dir / "registry-data.json"
    data_path.write_text(json.dumps(registry_data, indent=2) + "\n", encoding="utf-8")
    reg: dict[str, Any] = {"database_url": "sqlite:///registry.db", "keys_dir": "keys",
                           "passphrase_file": str(passphrase_file),
                           "publish_dir": "publish", "listen_host": "127.0.0.1",
                           "listen_port": registry_port}
    if registry_regenerate_seconds is not None:
        reg["regenerate_seconds"] = registry_regenerate_seconds
    (registry_dir / "registry.toml").write_text(
        "".join(f"{k} = {_toml(v)}\n" for k, v in reg.items()), encoding="utf-8")
    if not empty_registry:
        _prepare_registry(registry_dir / "registry.toml", data_path, now)

    provider_url = f"http://127.0.0.1:{provider_port}/"
    persons_url, adapter_config, adapter_port = provider_url, None, None
    if adapter:
        from xchange_cli.demo_adapter import write_demo_adapter

        adapter_port = free_port()
        adapter_config = write_demo_adapter(
            root / "adapter", adapter_port, benefits=str(CONSUMER.subsystem("benefits")),
            analytics=str(CONSUMER.subsystem("analytics")))
        persons_url = f"http://127.0.0.1:{adapter_port}/persons"
    for i, s in enumerate(servers):
        clients = [str(s.agency.subsystem(c)) for c in s.agency.subsystems]
        text = f"clients = {_toml(clients)}\n\n"
        server: dict[str, Any] = {"id": str(s.agency.server), "state_dir": "state"}
        if event_loop is not None:
            server["event_loop"] = event_loop
        text += _section("server", server)
        proxy: dict[str, Any] = {"host": "127.0.0.1", "port": s.client_proxy_port,
                                 "tls_port": s.client_proxy_tls_port}
        if max_body_bytes is not None:
            proxy["max_body_bytes"] = max_body_bytes
        text += _section("client_proxy", proxy)
        text += _section("server_proxy", {"host": "127.0.0.1", "port": s.server_proxy_port})
        key_settings: dict[str, Any] = {"auth_key": "auth.key", "auth_cert": "auth.pem",
                                        "passphrase_file": str(passphrase_file)}
        if signing_batch_max is not None:
            key_settings["signing_batch_max"] = signing_batch_max
        text += _section("keys", key_settings)
        key: dict[str, Any] = {"key": "sign.key"}
        if s.agency is CONSUMER and consumer_signing_token is not None:
            key = {"pkcs11": signing_in_token}
        text += _section("keys.signing", {"member": str(s.agency.member), **key,
                                          "cert": "sign.pem"}, array=True)
        text += _section("globalconf", {"anchor": "anchor.json",
                                        "refresh_seconds": ss_refresh_seconds})
        url = database_urls[i] if database_urls else f"sqlite:///{s.database}"
        log_settings: dict[str, Any] = {
            "database_url": url, "timestamping": timestamping,
            "timestamping_max_failure_seconds": timestamping_max_failure_seconds}
        if s.log_keys is not None:
            log_settings["encryption_keys"] = s.log_keys.name
        text += _section("messagelog", log_settings)
        text += _section("ocsp", {"refresh_seconds": ocsp_refresh_seconds,
                                  "retry_seconds": ocsp_retry_seconds})
        text += _section("admin_api", {"host": "127.0.0.1", "port": s.admin_port,
                                       "token_key": "admin.key"})
        text += "[is_connection]\n" + "".join(f'"{c}" = "HTTP"\n' for c in clients) + "\n"
        if s.agency is PROVIDER:
            text += _section("services", {"id": str(services["persons"]), "url": persons_url,
                                          "timeout": service_timeout}, array=True)
            text += _section("services", {"id": str(services["slow"]),
                                          "url": provider_url + "slow",
                                          "timeout": slow_service_timeout}, array=True)
            text += _section("services", {"id": str(services["down"]),
                                          "url": f"http://127.0.0.1:{free_port()}/",
                                          "timeout": service_timeout}, array=True)
            for code in ("persons", "slow", "down"):
                text += _section("access", {"service": str(services[code]),
                                            "clients": [str(CONSUMER.subsystem("benefits"))]},
                                 array=True)
        s.config.write_text(text, encoding="utf-8")

    return Federation(
        root=root, ca=ca, registry_config=registry_dir / "registry.toml",
        registry_port=registry_port, registry_data=data_path, provider_port=provider_port,
        ocsp_port=ocsp_port, tsa_port=tsa_port, tsa_key=tsa_dir / "tsa.key",
        tsa_cert=tsa_dir / "tsa.pem", servers=servers, services=services,
        allowed_client=CONSUMER.subsystem("benefits"),
        denied_client=CONSUMER.subsystem("analytics"), key_passphrase_file=passphrase_file,
        adapter_config=adapter_config, adapter_port=adapter_port,
    )


def _token_signing_key(ca: DevCA, directory: Path, agency: Agency, slot: TokenSlot,
                       now: datetime) -> dict[str, str]:
    """Generate ``agency``'s signing key in the token, have the CA certify it (``sign.pem``),
    and return the ``pkcs11`` table of its ``[[keys.signing]]`` entry."""
    from certs.pkcs11 import Token, generate_sign_key_and_csr

    # Unique per federation: several federations may share one token.
    label = f"xchange-sign-{agency.member.member_code}-{os.urandom(4).hex()}"
    with Token.open(slot.module, slot.token_label, slot.pin, rw=True) as token:
        _key, csr = generate_sign_key_and_csr(token, label, agency.member, agency.name)
    write_certificate(directory / "sign.pem", ca.issue_from_csr(csr, "sign", now=now),
                      ca.certificate)
    write_secret_file(directory / "token.pin", slot.pin + b"\n")
    return {"module": str(slot.module), "token_label": slot.token_label, "key_label": label,
            "pin_file": "token.pin"}


# -- processes ------------------------------------------------------------------------------


class ManagedProcess:
    """One child process whose output goes to ``<log_dir>/<name>.log``."""

    def __init__(self, name: str, argv: list[str], log_dir: Path,
                 cwd: Path | None = None, ready: Callable[[], bool] | None = None) -> None:
        self.name = name
        self.ready = ready
        """What :meth:`wait_ready` waits for (a health check, a port that accepts)."""
        self._terminated = False
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=cwd, env=env, start_new_session=True,
        )

    def wait_until(self, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with status {self.process.returncode}; "
                    f"see {self.log_path}:\n{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                if ready():
                    return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} was not ready within {timeout:g} s; see {self.log_path}")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """:meth:`wait_until` the process's own readiness check holds (if it has one)."""
        if self.ready is not None:
            self.wait_until(self.ready, timeout)

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as in a crash or power cut of the process."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()

    def terminate(self) -> None:
        """SIGTERM, without waiting: :meth:`stop` then waits (several processes stop together
        this way)."""
        if self.process.poll() is None and not self._terminated:
            self.process.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (loopback http)
        return bool(resp.status == 200)


def _port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def _xchange(*args: str) -> list[str]:
    return [sys.executable, "-m", "xchange_cli", *args]


class RunningFederation:
    """Start a built federation's processes; ``stop()`` (or ``with``) ends them all."""

    def __init__(self, federation: Federation) -> None:
        self.federation = federation
        self.processes: dict[str, ManagedProcess] = {}
        self._logs = federation.root / "logs"

    def __enter__(self) -> RunningFederation:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start every process and wait until each serves.  The processes that need nothing
        of each other start together, and only then is each waited for: a process spends most
        of its start-up importing, and those start-ups overlap.  The security servers need the
        registry's anchor, so they start (together) once the registry has published it."""
        fed = self.federation
        first = [self.start_provider(wait=False), self.start_adapter(wait=False),
                 self.start_ocsp_responder(wait=False), self.start_tsa(wait=False),
                 self.start_registry(wait=False)]
        for p in first:
            if p is not None:
                p.wait_ready()
        publish = fed.registry_config.parent / "publish"
        for s in fed.servers:
            s.directory.joinpath("anchor.json").write_bytes(
                (publish / "anchor.json").read_bytes())
        servers = [self.start_server(i, wait=False) for i in range(len(fed.servers))]
        for p in servers:
            p.wait_ready()

    def _launch(self, name: str, argv: list[str], ready: Callable[[], bool], *, wait: bool,
                cwd: Path | None = None) -> ManagedProcess:
        """Start process ``name``; with ``wait``, return once ``ready`` holds."""
        p = ManagedProcess(name, argv, self._logs, cwd=cwd, ready=ready)
        self.processes[name] = p
        if wait:
            p.wait_ready()
        return p

    def start_provider(self, *, wait: bool = True) -> ManagedProcess:
        port = self.federation.provider_port
        return self._launch(
            "provider-system",
            [sys.executable, "-m", "xchange_cli.demo_provider", "--port", str(port)],
            lambda: _http_ok(f"http://127.0.0.1:{port}/persons"), wait=wait)

    def start_adapter(self, *, wait: bool = True) -> ManagedProcess | None:
        """The adapter, if the federation has one (``xchange adapter serve``)."""
        fed = self.federation
        if fed.adapter_config is None:
            return None
        return self._launch(
            "adapter", _xchange("adapter", "serve", str(fed.adapter_config)),
            lambda: _http_ok(f"http://127.0.0.1:{fed.adapter_port}/health"), wait=wait)

    def start_ocsp_responder(self, *, wait: bool = True) -> ManagedProcess:
        fed = self.federation
        return self._launch("ocsp-responder", _xchange(
            "ca", "ocsp-serve", str(fed.ca.directory), "--host", "127.0.0.1",
            "--port", str(fed.ocsp_port), "--passphrase-file", str(fed.key_passphrase_file)),
            lambda: _port_open(fed.ocsp_port), wait=wait)

    def start_tsa(self, *, wait: bool = True) -> ManagedProcess:
        fed = self.federation
        return self._launch("tsa", _xchange(
            "tsa", "serve", "--key", str(fed.tsa_key), "--cert", str(fed.tsa_cert),
            "--host", "127.0.0.1", "--port", str(fed.tsa_port),
            "--passphrase-file", str(fed.key_passphrase_file)),
            lambda: _http_ok(f"{fed.tsa_url}health"), wait=wait)

    def start_registry(self, *, wait: bool = True) -> ManagedProcess:
        fed = self.federation
        publish = fed.registry_config.parent / "publish"
        return self._launch(
            "registry", _xchange("registry", "serve", "--config", str(fed.registry_config)),
            lambda: _http_ok(f"{fed.registry_url}/globalconf")
            and (publish / "anchor.json").exists(), wait=wait)

    def start_server(self, index: int, *, wait: bool = True) -> ManagedProcess:
        s = self.federation.servers[index]
        return self._launch(
            s.agency.server_code, _xchange("ss", "serve", "--config", str(s.config)),
            lambda: _http_ok(f"{s.client_proxy_url}/health"), wait=wait, cwd=s.directory)

    def kill_process(self, name: str) -> None:
        p = self.processes.pop(name, None)
        if p is not None:
            p.kill()

    def stop_process(self, name: str) -> None:
        p = self.processes.pop(name, None)
        if p is not None:
            p.stop()

    def stop(self) -> None:
        """Stop every process: the security servers first, as they may still reach the others
        while they shut down, then the rest.  The processes of each group stop together."""
        servers = {s.agency.server_code for s in self.federation.servers}
        names = list(reversed(self.processes))
        for group in ([n for n in names if n in servers], [n for n in names if n not in servers]):
            for name in group:
                self.processes[name].terminate()
            for name in group:
                self.stop_process(name)


@contextlib.contextmanager
def temporary_root(directory: Path | None) -> Iterator[Path]:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        yield directory
        return
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="xchange-demo-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
