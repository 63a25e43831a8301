"""``xchange audit``: verify a live log, archives, containers and exports offline, with only
the CA and TSA certificates; each kind of tampering is found and the record named."""

from __future__ import annotations

import asyncio
import gc
import io
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization

from certs.ca import DevCA
from certs.keys import (
    generate_private_key,
    unsafe_write_plaintext_key,
    write_certificate,
    write_private_key,
    write_secret_file,
)
from security_server import logaudit
from security_server.db import create_db_engine, create_tables
from security_server.messagelog import LogReader, MessageLog
from tests.auditkit import (
    AuditPki,
    fill_log,
    make_audit_pki,
    relink,
    repack,
    swap_bodies,
    unpack,
)
from tests.conftest import PG_URL_VARIABLE, postgres_schema
from tests.security_server.test_config import MINIMAL
from xchange.asic import write_container
from xchange.audit import AuditTrust
from xchange.canonical import canonical_json, parse_json
from xchange_cli import audit as audit_cli
from xchange_cli.main import main

DAY_AGO = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
CONFIG = MINIMAL.replace("TEST/GOV/1234/ss1", "TEST/GOV/1001/ss1") + """\
[archive]
directory = "archives"
max_records = 4
"""


@dataclass(frozen=True)
class Server:
    directory: Path
    config: Path
    trust: tuple[str, ...]
    """``--ca ... --tsa ...``: the only anchors the auditor uses."""

    @property
    def database(self) -> Path:
        return self.directory / "messagelog.db"

    @property
    def archives(self) -> Path:
        return self.directory / "archives"


def make_server(directory: Path, pki: AuditPki, ca: DevCA, *, extra: str = "",
                queries: int = 2, database_url: str | None = None) -> Server:
    """A server whose log holds ``queries`` queries (in its SQLite file, or at
    ``database_url``, which the caller then passes as ``XCHANGE_DATABASE_URL``)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "security-server.toml"
    config.write_text(CONFIG + extra)
    engine = create_db_engine(database_url or f"sqlite:///{directory / 'messagelog.db'}")
    create_tables(engine)

    async def fill() -> None:
        log = MessageLog(engine)
        try:
            await fill_log(log, pki, queries, batch=3, stamp_all=False)
        finally:
            log.close()

    asyncio.run(fill())
    engine.dispose()
    write_certificate(directory / "tsa.pem", pki.tsa.certificate)
    return Server(directory, config, ("--ca", str(ca.cert_path),
                                      "--tsa", str(directory / "tsa.pem")))


@pytest.fixture(scope="module")
def past_ca(tmp_path_factory: pytest.TempPathFactory) -> DevCA:
    """A CA of a day ago: the commands use the real clock, and must find the log's records
    in the past, not in the future."""
    return DevCA.create(tmp_path_factory.mktemp("past-ca"), "TEST", now=DAY_AGO)


@pytest.fixture(scope="module")
def past_pki(past_ca: DevCA, tmp_path_factory: pytest.TempPathFactory) -> AuditPki:
    return make_audit_pki(past_ca, tmp_path_factory.mktemp("past-pki"), DAY_AGO)


@pytest.fixture
def server(tmp_path: Path, past_pki: AuditPki, past_ca: DevCA) -> Server:
    return make_server(tmp_path / "ss", past_pki, past_ca)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


# -- the live log ------------------------------------------------------------------------------


def test_an_unaltered_live_log_verifies(server: Server, capsys: pytest.CaptureFixture[str],
                                        workers: str) -> None:
    code, out = run(capsys, "audit", "verify", "--config", str(server.config), *server.trust)
    assert code == 0, out
    assert "hash chain intact: 4 records (sequence 1..4)" in out
    assert "signatures verified: 4" in out
    assert "OCSP responses good at signing time: 4" in out
    assert "time-stamps verified: 3 records in 1 batches" in out  # record 4 not yet stamped
    assert "not yet time-stamped: 1" in out
    assert out.rstrip().endswith("OK: everything verifies")
    # ss verify-log is the same command
    assert run(capsys, "ss", "verify-log", "--config", str(server.config), *server.trust) == (
        code, out)


# What verifying a live SQLite log must not load (docs/performance.md, verify-log,
# "Start-up"): the ORM and its models' validation library (the log's tables are Core
# tables), the PostgreSQL dialect, the HTTP client, the CA tools of the key options.
NOT_FOR_A_LIVE_LOG = ("sqlmodel", "pydantic", "sqlalchemy.orm", "sqlalchemy.dialects.postgresql",
                      "urllib.request", "http.client", "certs.ca")


def test_verifying_a_live_log_loads_no_orm(server: Server) -> None:
    argv = ["ss", "verify-log", "--config", str(server.config), *server.trust]
    code = ("import sys\nfrom xchange_cli.main import main\n"
            f"status = main({argv!r})\n"
            "print(status, ' '.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=server.directory)
    status, *loaded = done.stdout.splitlines()[-1].split()
    assert status == "0", done.stdout + done.stderr
    assert "security_server.logaudit" in loaded
    assert set(loaded).isdisjoint(NOT_FOR_A_LIVE_LOG), sorted(set(loaded) & set(NOT_FOR_A_LIVE_LOG))


def _shift_insert(db: sqlite3.Connection) -> None:
    """Slip a copy of record 2 in as record 2 -- with a valid link and a valid hash, being
    the very same record -- and renumber the rest."""
    db.execute("UPDATE message_log SET sequence = -sequence WHERE sequence >= 2")
    db.execute("UPDATE message_log SET sequence = -sequence + 1 WHERE sequence < 0")
    cursor = db.execute("SELECT * FROM message_log WHERE sequence = 3")
    values = dict(zip([d[0] for d in cursor.description], cursor.fetchone(), strict=True))
    values.update(sequence=2, batch_id=None, merkle_path=None)
    columns, marks = ", ".join(values), ", ".join("?" for _ in values)
    db.execute(f"INSERT INTO message_log ({columns}) VALUES ({marks})",  # noqa: S608
               list(values.values()))


TAMPERINGS: dict[str, tuple[Callable[[sqlite3.Connection], object], int, str]] = {
    "alter": (lambda db: db.execute(
        "UPDATE message_log SET body = X'00' WHERE sequence = 3"), 3,
        "record content does not match its hash"),
    "delete": (lambda db: db.execute("DELETE FROM message_log WHERE sequence = 3"), 3,
               "expected record 3, found record 4"),
    "insert": (_shift_insert, 2, "lies in batch 1 but is not stamped by it"),
    "restamp": (lambda db: db.execute(
        "UPDATE message_log SET batch_id = 1, merkle_path = (SELECT merkle_path FROM "
        "message_log WHERE sequence = 3) WHERE sequence = 4"), 4, "outside batch 1"),
    "unknown batch": (lambda db: db.execute(
        "UPDATE message_log SET batch_id = 99 WHERE sequence = 4"), 4, "batch 99 is missing"),
    "reorder": (lambda db: db.executescript(
        "UPDATE message_log SET sequence = -1 WHERE sequence = 2;"
        "UPDATE message_log SET sequence = 2 WHERE sequence = 3;"
        "UPDATE message_log SET sequence = 3 WHERE sequence = -1;"), 2,
        "record 2"),
}


@pytest.fixture(params=["one process", "worker processes"])
def workers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[str]:
    """Verify live logs in one process, or (however small the log) with worker processes
    each reading and checking shares of one record, in pages of two records: the same
    report either way."""
    if request.param == "worker processes":
        if len(os.sched_getaffinity(0)) < 2:
            pytest.skip("worker processes need more than one core")
        monkeypatch.setattr(audit_cli, "PARALLEL_MIN_RECORDS", 0)
        monkeypatch.setattr(logaudit, "_MIN_SHARE", 1)
        monkeypatch.setattr(logaudit, "_PAGE", 2)
        pools: list[int] = []
        real_pool = logaudit.audit_pool

        def counted_pool(trust: AuditTrust, workers: int,
                         open_reader: Callable[[], LogReader]) -> logaudit.AuditPool:
            pools.append(workers)
            pool = real_pool(trust, workers, open_reader)
            # A worker keeps what it inherited out of the collector's sweeps.
            assert pool.executor.submit(gc.get_freeze_count).result() > 0
            return pool

        monkeypatch.setattr(audit_cli, "audit_pool", counted_pool)
        yield str(request.param)
        assert pools, "the live log was not verified with worker processes"
        return
    yield str(request.param)


@pytest.mark.parametrize("how", list(TAMPERINGS))
def test_tampering_with_the_live_log_is_named(
    server: Server, capsys: pytest.CaptureFixture[str], how: str, workers: str
) -> None:
    tamper, sequence, reason = TAMPERINGS[how]
    with sqlite3.connect(server.database) as db:
        tamper(db)
    code, out = run(capsys, "audit", "verify", "--config", str(server.config), *server.trust)
    assert code == 1, out
    failed = out.strip().splitlines()[-1]
    assert failed.startswith(f"FAILED at record {sequence}:"), out
    assert reason in failed


SHARE_EDGES: dict[str, tuple[str, int, str]] = {
    # With worker processes (shares of two records: 1-2, 3-4, ...) each of these sits at the
    # edge between two shares, so only the joining of the shares can find it.
    "last of a share deleted": ("DELETE FROM message_log WHERE sequence = 6", 6,
                                "expected record 6, found record 7"),
    "first of a share deleted": ("DELETE FROM message_log WHERE sequence = 7", 7,
                                 "expected record 7, found record 8"),
    "first of a share relinked": ("UPDATE message_log SET prev_hash = (SELECT record_hash "
                                  "FROM message_log WHERE sequence = 1) WHERE sequence = 7", 7,
                                  "prev_hash does not match the previous record's hash"),
}


@pytest.mark.parametrize("how", list(SHARE_EDGES))
def test_breaks_between_shares_are_named(
    tmp_path: Path, past_pki: AuditPki, past_ca: DevCA, capsys: pytest.CaptureFixture[str],
    how: str, workers: str
) -> None:
    server = make_server(tmp_path / "ss", past_pki, past_ca, queries=6)  # records 1..12
    statement, sequence, reason = SHARE_EDGES[how]
    with sqlite3.connect(server.database) as db:
        db.executescript(statement)
    code, out = run(capsys, "audit", "verify", "--config", str(server.config), *server.trust)
    assert code == 1, out
    failed = out.strip().splitlines()[-1]
    assert failed.startswith(f"FAILED at record {sequence}:"), out
    assert reason in failed


def test_the_first_failure_in_sequence_order_is_named(
    tmp_path: Path, past_pki: AuditPki, past_ca: DevCA, capsys: pytest.CaptureFixture[str],
    workers: str
) -> None:
    """Whichever check fails and whoever checks it: a record that cannot even be read (9), a
    broken link (11) and a later share's failures do not hide an altered record before them
    (3)."""
    server = make_server(tmp_path / "ss", past_pki, past_ca, queries=6)
    with sqlite3.connect(server.database) as db:
        db.executescript("UPDATE message_log SET kind = 'bogus' WHERE sequence = 9;"
                         "DELETE FROM message_log WHERE sequence = 11;"
                         "UPDATE message_log SET body = X'00' WHERE sequence = 3;")
    code, out = run(capsys, "audit", "verify", "--config", str(server.config), *server.trust)
    assert code == 1, out
    assert out.strip().splitlines()[-1] == (
        "FAILED at record 3: message log chain broken at record 3: record content does not "
        "match its hash"), out
    with sqlite3.connect(server.database) as db:
        db.execute("UPDATE message_log SET body = X'' WHERE sequence = 3")  # as it was
    code, out = run(capsys, "audit", "verify", "--config", str(server.config), *server.trust)
    assert code == 1, out
    failed = out.strip().splitlines()[-1]
    assert failed.startswith("FAILED at record 9:") and "stored record is malformed" in failed


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL of an empty PostgreSQL schema; skips without ``XCHANGE_TEST_DATABASE_URL``."""
    base = os.environ.get(PG_URL_VARIABLE)
    if not base:
        pytest.skip(f"{PG_URL_VARIABLE} not set: PostgreSQL tests skipped")
    with postgres_schema(base) as url:
        yield url


@pytest.mark.postgres
def test_a_live_log_on_postgresql_verifies_and_tampering_is_named(
    tmp_path: Path, past_pki: AuditPki, past_ca: DevCA, capsys: pytest.CaptureFixture[str],
    pg_url: str, workers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read from a database server a page ahead (pages of two records here)."""
    monkeypatch.setattr(logaudit, "_PAGE", 2)
    monkeypatch.setenv("XCHANGE_DATABASE_URL", pg_url)
    server = make_server(tmp_path / "ss", past_pki, past_ca, queries=6, database_url=pg_url)
    code, out = run(capsys, "audit", "verify", "--config", str(server.config), *server.trust)
    assert code == 0, out
    assert "hash chain intact: 12 records (sequence 1..12)" in out
    assert "time-stamps verified: 12 records in 4 batches" in out
    engine = create_db_engine(pg_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM message_log WHERE sequence = 7"))
    finally:
        engine.dispose()
    code, out = run(capsys, "audit", "verify", "--config", str(server.config), *server.trust)
    assert code == 1, out
    failed = out.strip().splitlines()[-1]
    assert failed.startswith("FAILED at record 7:") and "found record 8" in failed, out


def test_search_finds_by_query_and_user(server: Server, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    code, out = run(capsys, "audit", "search", "--config", str(server.config),
                    "--query-id", "q-3")
    assert code == 0 and "2 record(s)" in out
    assert "request  outgoing ok       q-3 TEST/GOV/1001/benefits" in out
    assert out.count("(not yet time-stamped)") == 1  # record 4, the response
    code, out = run(capsys, "audit", "search", "--config", str(server.config),
                    "--user-id", "EE12345")
    assert "2 record(s)" in out and "(not yet time-stamped)" not in out


# -- archives ----------------------------------------------------------------------------------


def archived(server: Server, capsys: pytest.CaptureFixture[str]) -> list[Path]:
    code, out = run(capsys, "audit", "archive", "--config", str(server.config))
    assert code == 0, out
    assert "1 archive file(s) written" in out
    return sorted(server.archives.iterdir())


def test_archives_verify_alone_and_as_a_directory(
    tmp_path: Path, past_pki: AuditPki, past_ca: DevCA, capsys: pytest.CaptureFixture[str]
) -> None:
    server = make_server(tmp_path / "ss", past_pki, past_ca, queries=4)
    # batches of 3: records 1-6 stamped; archives of at most 4 records
    code, out = run(capsys, "audit", "archive", "--config", str(server.config))
    assert code == 0 and "2 archive file(s) written" in out, out
    files = sorted(server.archives.iterdir())
    code, out = run(capsys, "audit", "verify", str(server.archives), *server.trust)
    assert code == 0, out
    assert "archive 1 of TEST/GOV/1001/ss1: records 1..4" in out
    assert "archive 2 of TEST/GOV/1001/ss1: records 5..6" in out
    assert "time-stamps verified: 6 records in 2 batches" in out
    code, out = run(capsys, "audit", "verify", str(files[1]), "--previous", str(files[0]),
                    *server.trust)
    assert code == 0, out
    # the second archive alone verifies, but not as the successor of a rewritten first
    files[0].write_bytes(repack(_relinked(unpack(files[0].read_bytes()))))
    code, out = run(capsys, "audit", "verify", str(server.archives), *server.trust)
    assert code == 1 and "FAILED at archive link" in out, out


def _relinked(files: dict[str, bytes]) -> dict[str, bytes]:
    doc = parse_json(files["linking.json"])
    doc["created_at"] = "2000-01-01T00:00:00.000000Z"  # any change to the linking file
    files["linking.json"] = canonical_json(doc)
    return files


def _alter(files: dict[str, bytes]) -> None:
    name = "containers/000000000002.asice"
    files[name] = swap_bodies(files[name])


def _delete(files: dict[str, bytes]) -> None:
    del files["containers/000000000002.asice"]
    relink(files, lambda cs: cs.pop(1))


def _insert(files: dict[str, bytes]) -> None:
    files["containers/000000000007.asice"] = files["containers/000000000001.asice"]
    relink(files, lambda cs: cs.insert(1, {"name": "containers/000000000007.asice",
                                          "sequence": 7, "sha256": "", "link": ""}))


def _reorder(files: dict[str, bytes]) -> None:
    relink(files, lambda cs: cs.insert(1, cs.pop(2)))


ARCHIVE_TAMPERINGS: dict[str, tuple[Callable[[dict[str, bytes]], None], int]] = {
    "alter": (_alter, 2), "delete": (_delete, 2), "insert": (_insert, 7),
    "reorder": (_reorder, 2),
}


@pytest.mark.parametrize("how", list(ARCHIVE_TAMPERINGS))
def test_tampering_with_an_archive_is_named(
    server: Server, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    [path] = archived(server, capsys)
    files = unpack(path.read_bytes())
    tamper, sequence = ARCHIVE_TAMPERINGS[how]
    tamper(files)
    path.write_bytes(repack(files))
    code, out = run(capsys, "audit", "verify", str(path), *server.trust)
    assert code == 1, out
    assert out.strip().splitlines()[-1].startswith(f"FAILED at record {sequence}:"), out


def _container(archive: Path, sequence: int, tmp_path: Path) -> Path:
    out = tmp_path / f"{sequence}.asice"
    out.write_bytes(unpack(archive.read_bytes())[f"containers/{sequence:012d}.asice"])
    return out


def test_a_single_container_verifies_and_tampering_is_named(
    server: Server, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    [path] = archived(server, capsys)
    container = _container(path, 2, tmp_path)
    code, out = run(capsys, "audit", "verify", str(container), *server.trust)
    assert code == 0 and "time-stamps verified: 1 records in 1 batches" in out, out
    container.write_bytes(swap_bodies(container.read_bytes()))
    code, out = run(capsys, "audit", "verify", str(container), *server.trust)
    assert code == 1 and "FAILED at record 2: message log chain broken" in out, out
    # a part removed from a container: no longer a record at all
    files = unpack(_container(path, 3, tmp_path).read_bytes())
    del files["message/body"]
    container.write_bytes(write_container([(n, "application/octet-stream", d)
                                           for n, d in files.items()]))
    code, out = run(capsys, "audit", "verify", str(container), *server.trust)
    assert code == 1 and "error [server.messagelog.bad_container]" in out, out
    container.write_bytes(b"PK\x03\x04garbage")
    code, out = run(capsys, "audit", "verify", str(container), *server.trust)
    assert code == 1 and "not a ZIP file" in out


def test_untrusted_anchors_fail(server: Server, capsys: pytest.CaptureFixture[str],
                                tmp_path: Path, past_pki: AuditPki) -> None:
    [path] = archived(server, capsys)
    other = DevCA.create(tmp_path / "other", "TEST", now=past_pki.now)
    code, out = run(capsys, "audit", "verify", str(path), "--ca", str(other.cert_path),
                    "--tsa", str(server.directory / "tsa.pem"))
    assert code == 1 and "FAILED at record 1: evidence of record 1 does not verify: " \
        "signature: signing certificate" in out, out


def test_export_of_one_query_is_self_contained(
    server: Server, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_file = tmp_path / "q-1.asice"
    code, out = run(capsys, "audit", "export", "--config", str(server.config), "--query-id",
                    "q-1", "--out", str(out_file))
    assert code == 0 and "exported 2 record(s) of query q-1" in out, out
    with zipfile.ZipFile(io.BytesIO(out_file.read_bytes())) as zf:
        assert zf.namelist() == ["mimetype", "records/000000000001.asice",
                                 "records/000000000002.asice", "META-INF/manifest.xml"]
    code, out = run(capsys, "audit", "verify", str(out_file), *server.trust)
    assert code == 0 and "signatures verified: 2" in out, out
    code, out = run(capsys, "audit", "export", "--config", str(server.config), "--query-id",
                    "nope", "--out", str(out_file))
    assert code == 1 and "no record of query 'nope'" in out


def test_encrypted_archives_need_the_auditors_key(
    tmp_path: Path, past_pki: AuditPki, past_ca: DevCA, capsys: pytest.CaptureFixture[str]
) -> None:
    key = generate_private_key("ec")
    write_private_key(tmp_path / "auditor.key", key, b"auditor passphrase")
    write_secret_file(tmp_path / "auditor.pass", b"auditor passphrase\n")
    (tmp_path / "auditor.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    server = make_server(tmp_path / "ss", past_pki, past_ca,
                         extra=f'recipients = ["{tmp_path / "auditor.pub"}"]\n')
    [path] = archived(server, capsys)
    assert path.name.endswith(".zip.xenc")
    code, out = run(capsys, "audit", "verify", str(path), *server.trust)
    assert code == 1 and "is encrypted: give the auditor's private key with --key" in out
    code, out = run(capsys, "audit", "verify", str(path), "--key", str(tmp_path / "auditor.key"),
                    "--passphrase-file", str(tmp_path / "auditor.pass"), *server.trust)
    assert code == 0, out
    other = generate_private_key("ec")
    unsafe_write_plaintext_key(tmp_path / "other.key", other)
    code, out = run(capsys, "audit", "verify", str(path), "--key", str(tmp_path / "other.key"),
                    *server.trust)
    assert code == 1 and "not encrypted to this key" in out


@pytest.mark.skipif(shutil.which("openssl") is None,
                    reason="the openssl command-line client is not installed")
def test_archived_tokens_verify_with_openssl_alone(
    server: Server, capsys: pytest.CaptureFixture[str], tmp_path: Path, past_ca: DevCA
) -> None:
    [path] = archived(server, capsys)
    container = unpack(_container(path, 2, tmp_path).read_bytes())
    token = tmp_path / "timestamp.tst"
    token.write_bytes(container["evidence/timestamp.tst"])
    root = parse_json(container["evidence/record.json"])["timestamp"]["root"]
    done = subprocess.run(
        ["openssl", "ts", "-verify", "-digest", root, "-token_in", "-in", str(token),
         "-CAfile", str(past_ca.cert_path), "-untrusted", str(server.directory / "tsa.pem")],
        capture_output=True, text=True, timeout=60, check=False)
    assert "Verification: OK" in done.stdout, done.stdout + done.stderr
    wrong = subprocess.run(
        ["openssl", "ts", "-verify", "-digest", "00" * 32, "-token_in", "-in", str(token),
         "-CAfile", str(past_ca.cert_path), "-untrusted", str(server.directory / "tsa.pem")],
        capture_output=True, text=True, timeout=60, check=False)
    assert "Verification: FAILED" in wrong.stdout
