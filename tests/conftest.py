"""Shared pytest fixtures.  One section per area; keep each small."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography import x509

from certs.ca import DevCA, IssuedCredentials
from certs.keys import PrivateKey
from certs.pkcs8 import UNSAFE_TEST_SCRYPT_COST, unsafe_scrypt_cost
from certs.tsa import TimeStampAuthority
from security_server.db import create_db_engine
from tests.auditkit import AuditPki, make_audit_pki
from xchange.identifiers import ClientId, SecurityServerId
from xchange_cli.federation import use_ports


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n 2``), each worker hands out ports from a part of the range of
    its own (``PYTEST_XDIST_WORKER`` is ``gw0``, ``gw1``, ...)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        return
    index, count = int(worker.removeprefix("gw")), int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    size = len(range(20000, 32000)) // count
    use_ports(range(20000 + index * size, 20000 + (index + 1) * size))


class Clock:
    """A clock that says what the test sets ``now`` to."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# -- key files: the suite's throwaway keys at a cheap scrypt cost -----------------------------


@pytest.fixture(scope="session", autouse=True)
def cheap_key_files() -> Iterator[None]:
    """Every key file this process writes uses scrypt at :data:`UNSAFE_TEST_SCRYPT_COST`
    instead of the default's 50 ms per derivation, paid again at every load; the files are
    still real scrypt-encrypted PKCS#8.  Processes the tests start use the default
    (tests/certs/test_keys.py checks both)."""
    with unsafe_scrypt_cost(UNSAFE_TEST_SCRYPT_COST):
        yield


# -- PKI: a development CA and certificates issued by it ----------------------------------------


@pytest.fixture(scope="session")
def pki_now() -> datetime:
    """The issuing time of every session certificate; verify at this time, or relative to it."""
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="session")
def dev_ca(tmp_path_factory: pytest.TempPathFactory, pki_now: datetime) -> DevCA:
    """The root CA of instance ``TEST`` (EC P-256)."""
    return DevCA.create(tmp_path_factory.mktemp("dev-ca"), "TEST", now=pki_now)


@pytest.fixture(scope="session")
def issue_member_sign(
    tmp_path_factory: pytest.TempPathFactory, dev_ca: DevCA, pki_now: datetime
) -> Callable[..., IssuedCredentials]:
    """``issue_member_sign("TEST/GOV/1234")``: a fresh signing key and certificate."""

    def issue(member: str, member_name: str = "Test Member") -> IssuedCredentials:
        directory = tmp_path_factory.mktemp("sign")
        return dev_ca.issue_key_and_cert(
            directory, "sign", ClientId.parse(member), member_name=member_name, now=pki_now
        )

    return issue


@pytest.fixture(scope="session")
def issue_server_auth(
    tmp_path_factory: pytest.TempPathFactory, dev_ca: DevCA, pki_now: datetime
) -> Callable[..., IssuedCredentials]:
    """``issue_server_auth("TEST/GOV/1234/ss1")``: a fresh auth key and certificate
    for ``localhost`` / ``127.0.0.1``."""

    def issue(server: str, member_name: str = "Test Member") -> IssuedCredentials:
        directory = tmp_path_factory.mktemp("auth")
        return dev_ca.issue_key_and_cert(
            directory, "auth", SecurityServerId.parse(server), member_name=member_name, now=pki_now
        )

    return issue


# -- time-stamping: a TSA certified by the development CA -------------------------------------


@pytest.fixture(scope="session")
def tsa_credentials(dev_ca: DevCA, pki_now: datetime) -> tuple[PrivateKey, x509.Certificate]:
    """The key and certificate of the test TSA (EC P-256, critical timeStamping EKU)."""
    return dev_ca.issue_tsa_cert("Test TSA", now=pki_now)


@pytest.fixture(scope="session")
def tsa(tsa_credentials: tuple[PrivateKey, x509.Certificate], dev_ca: DevCA) -> TimeStampAuthority:
    """The test TSA, answering with the development TSA policy."""
    key, cert = tsa_credentials
    return TimeStampAuthority(key, [cert, dev_ca.certificate])


# -- audit: signing identities, an OCSP responder and the TSA, for evidence of a real log -----


@pytest.fixture(scope="session")
def audit_pki(dev_ca: DevCA, tmp_path_factory: pytest.TempPathFactory,
              pki_now: datetime) -> AuditPki:
    """What :mod:`tests.auditkit` needs to make a small, real, time-stamped log."""
    return make_audit_pki(dev_ca, tmp_path_factory.mktemp("audit-pki"), pki_now)


# -- PostgreSQL: a schema of its own per test ------------------------------------------------

PG_URL_VARIABLE = "XCHANGE_TEST_DATABASE_URL"


@contextlib.contextmanager
def postgres_schema(base: str) -> Iterator[str]:
    """A URL on the PostgreSQL database ``base`` whose search path is a fresh schema, dropped
    afterwards.  A set but unusable ``base`` fails the test: CI must not skip silently."""
    schema = f"t_{secrets.token_hex(8)}"
    admin = create_db_engine(base)
    try:
        with admin.begin() as connection:
            connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except sa.exc.SQLAlchemyError as exc:
        admin.dispose()
        pytest.fail(f"{PG_URL_VARIABLE} is set but PostgreSQL cannot be used: {exc}")
    url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


# -- PKCS#11: one SoftHSM2 token for the session ---------------------------------------------

SOFTHSM_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",  # Debian, Ubuntu
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",  # Fedora
    "/usr/local/lib/softhsm/libsofthsm2.so",  # built from source
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",  # macOS
)


@dataclass(frozen=True)
class SoftHsm:
    module: Path
    token_label: str
    pin: bytes


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """An initialised SoftHSM2 token in a temporary folder.  ``SOFTHSM2_CONF`` points there
    for the whole session, in this process and the processes it starts: SoftHSM2 reads it once
    per process, so every test shares this one token (keys get labels of their own).
    Skips, saying what to install, where SoftHSM2 or python-pkcs11 is missing."""
    pytest.importorskip("pkcs11", reason="python-pkcs11 not installed: pip install xchange[hsm]")
    module = next((Path(m) for m in SOFTHSM_MODULES if Path(m).exists()), None)
    util = shutil.which("softhsm2-util")
    if module is None or util is None:
        pytest.skip("SoftHSM2 not installed: apt-get install softhsm2")
    folder = tmp_path_factory.mktemp("softhsm")
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\n"
                    "objectstore.backend = file\nlog.level = ERROR\n")
    pin, label = secrets.token_hex(8), "xchange-test"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(conf))
        subprocess.run([util, "--init-token", "--free", "--label", label, "--pin", pin,
                        "--so-pin", secrets.token_hex(8)], check=True, capture_output=True)
        yield SoftHsm(module, label, pin.encode())
