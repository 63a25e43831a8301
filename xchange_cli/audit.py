"""``xchange audit``: verify, search and export message-log evidence; make archives.

* ``audit verify PATH`` -- an archive file (encrypted or not), a directory of archive files
  (each, and the chain between them), a single evidence container, or an exported query; or
  ``audit verify --config FILE``, a security server's live log (``ss verify-log`` is the same
  command).  Offline, with only the trust anchors given: a configuration anchor and a global
  configuration file (``--anchor``, ``--globalconf``), or CA and TSA certificates (``--ca``,
  ``--tsa``); a live log defaults to its server's own anchor and last good configuration.
  Exit status 0 when everything verifies, 1 naming the first broken record otherwise.
* ``audit search --config FILE`` -- records by query id, client, service, user id, time.
* ``audit export --config FILE --query-id ID --out FILE`` -- the request and response of one
  query, with their evidence, as one self-contained ASiC-E container.
* ``audit archive --config FILE`` -- archive now, and remove records past retention.

The checks themselves are :mod:`xchange.audit` and :mod:`xchange.archive`; this module reads
files and the database and prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import multiprocessing
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certs.keys import PrivateKey, load_certificates, load_private_key
from security_server.archiver import (
    Archiver,
    DirectoryTarget,
    MadeArchive,
    load_recipients,
)
from security_server.confclient import CACHE_FILE, learned_keys
from security_server.config import SecurityServerConfig
from security_server.db import create_db_engine, create_tables
from security_server.logaudit import (
    BROKEN,
    AuditReport,
    audit_pool,
    export_query,
    trust_from_files,
    verify_live_log,
)
from security_server.logkeys import load_keyring
from security_server.logtables import MESSAGE_LOG
from security_server.messagelog import LogQuery, LogReader, MessageLog
from xchange.archive import (
    ArchiveContents,
    ArchiveLinking,
    check_succession,
    container_kind,
    read_archive,
)
from xchange.archive_crypto import decrypt_archive, is_encrypted
from xchange.audit import AuditTrust, verify_all, verify_evidence
from xchange.errors import XRoadError
from xchange.evidence import read_bundle, read_evidence
from xchange.globalconf import ApprovedCA
from xchange.logcrypto import Keyring
from xchange.messagelog import LogEntry, StoredRecord
from xchange.rest import RestResponse, data_subjects_of

__all__ = ["AuditReport", "check_log", "verify_path"]


# -- trust ------------------------------------------------------------------------------------


def _trust(args: argparse.Namespace, config: SecurityServerConfig | None) -> AuditTrust:
    if args.ca:
        cas = tuple(ApprovedCA(c.subject.rfc4514_string(), c)
                    for path in args.ca for c in load_certificates(path))
        tsas = tuple(load_certificates(path)[0] for path in args.tsa or ())
        return AuditTrust(cas=cas, tsas=tsas,
                          ocsp_max_age=timedelta(seconds=args.ocsp_max_age))
    anchor_path = args.anchor or (config.anchor if config else None)
    conf_path = args.globalconf or (config.state_dir / CACHE_FILE if config else None)
    if anchor_path is None or conf_path is None:
        raise ValueError("give the trust anchors: --anchor and --globalconf, or --ca and --tsa")
    # A server's own state also holds the configuration-signing keys it learnt after the
    # anchor (key rotation); an auditor's --anchor/--globalconf pair stands on its own.
    learned = learned_keys(config.state_dir) if config and not args.globalconf else ()
    return trust_from_files(Path(anchor_path), Path(conf_path), learned)


# -- files ------------------------------------------------------------------------------------


def _plain(path: Path, key: PrivateKey | None) -> bytes:
    data = path.read_bytes()
    if not is_encrypted(data):
        return data
    if key is None:
        raise ValueError(f"{path} is encrypted: give the auditor's private key with --key")
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("archives are encrypted to RSA or EC keys")
    return decrypt_archive(data, key)


def _verify_archives(paths: list[Path], trust: AuditTrust, key: PrivateKey | None,
                     report: AuditReport) -> None:
    previous: ArchiveLinking | None = None
    for path in paths:
        contents: ArchiveContents = read_archive(_plain(path, key))
        if previous is not None:
            check_succession(previous, contents.linking)
        report.archives.append(contents.linking)
        report.tally.add_all(verify_all(contents.evidence, trust))
        previous = contents.linking


def verify_path(path: Path, trust: AuditTrust, *, key: PrivateKey | None = None,
                previous: Path | None = None) -> AuditReport:
    """Verify a file or directory (see the module docstring); failures go in the report."""
    report = AuditReport(subject=str(path))
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            if not files:
                raise ValueError(f"{path} holds no archive files")
            _verify_archives(files, trust, key, report)
            return report
        data = _plain(path, key)
        kind = container_kind(data)
        if kind == "archive":
            _verify_archives([*([previous] if previous else []), path], trust, key, report)
        elif kind == "bundle":
            report.tally.add_all(verify_all(read_bundle(data), trust))
        else:
            report.tally.add(verify_evidence(read_evidence(data), trust))
    except BROKEN as exc:
        report.failure = exc
    return report


# -- the live log -----------------------------------------------------------------------------


def _missing_sqlite_file(config: SecurityServerConfig) -> str | None:
    """The path of the SQLite log file ``config`` names, if it does not exist (opening it
    would create it)."""
    url = sa.make_url(config.database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return url.database or ""
    return None


@contextlib.asynccontextmanager
async def _open_log(config: SecurityServerConfig, *, create: bool = False
                    ) -> AsyncIterator[tuple[MessageLog, sa.Engine]]:
    if (missing := _missing_sqlite_file(config)) is not None:
        # Opening it would create an empty log that "verifies": refuse a wrong path instead.
        raise ValueError(f"no message log at {missing}")
    # Records are read decrypted when the log is encrypted at rest (security_server.logkeys).
    keyring = load_keyring(config.encryption_keys) if config.encryption_keys else None
    engine = create_db_engine(config.database_url)
    log = None
    try:
        try:
            has_log = sa.inspect(engine).has_table(MESSAGE_LOG.name)
            if has_log and create:
                create_tables(engine)  # the archive table, on a log made before it existed
        except sa.exc.SQLAlchemyError as exc:
            raise ValueError(f"cannot open the message log database: {exc}") from exc
        if not has_log:
            raise ValueError("the database holds no message log")
        log = MessageLog(engine, keyring=keyring)
        yield log, engine
    finally:
        if log is not None:
            log.close()
        engine.dispose()


def check_log(config_path: Path, args: argparse.Namespace | None = None) -> AuditReport:
    """Verify the live log of the security server configured in ``config_path``, with its
    own trust anchors unless ``args`` names others."""
    config = SecurityServerConfig.from_file(config_path).from_env(secrets=False)
    trust = _trust(args or _no_trust_args(), config)
    # Forked before the event loop starts any thread (see audit_pool).
    workers = _audit_workers(config)
    pool = None
    if workers > 1:
        keyring = load_keyring(config.encryption_keys) if config.encryption_keys else None
        pool = audit_pool(trust, workers, functools.partial(
            _reader, config.database_url, keyring))

    async def verify() -> AuditReport:
        async with _open_log(config) as (log, engine):
            return await verify_live_log(log, engine, trust, pool=pool,
                                         subject=f"live message log of {config.server_id}")

    try:
        return asyncio.run(verify())
    finally:
        if pool is not None:
            pool.shutdown()


def _reader(database_url: str, keyring: Keyring | None) -> LogReader:
    return LogReader(create_db_engine(database_url), keyring)


PARALLEL_MIN_RECORDS = 10_000
"""Below this many records a live log is verified in one process: starting workers would
cost more than they save."""
MAX_AUDIT_WORKERS = 8


def _audit_workers(config: SecurityServerConfig) -> int:
    """How many processes should check the live log's evidence: one per usable core (up to
    :data:`MAX_AUDIT_WORKERS`) for a large log, else none (a count that fails: none, and
    the verification itself reports the error)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if (cores < 2 or "fork" not in multiprocessing.get_all_start_methods()
            or _missing_sqlite_file(config) is not None):
        return 0
    try:
        engine = create_db_engine(config.database_url)
        try:
            with engine.connect() as connection:
                count = connection.execute(
                    sa.select(sa.func.count()).select_from(MESSAGE_LOG)).scalar_one()
        finally:
            engine.dispose()
    except (sa.exc.SQLAlchemyError, ValueError):
        return 0
    return min(cores, MAX_AUDIT_WORKERS) if count >= PARALLEL_MIN_RECORDS else 0


def _no_trust_args() -> argparse.Namespace:
    return argparse.Namespace(ca=None, tsa=None, anchor=None, globalconf=None, ocsp_max_age=3600)


# -- commands ---------------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    if (args.path is None) == (args.config is None):
        raise ValueError("give either a PATH to verify or --config for a live log")
    if args.config is not None:
        report = check_log(args.config, args)
    else:
        # Not for a live log: the key options' module pulls in the CA tools (certs.ca).
        from xchange_cli.keys import passphrase_from

        passphrase = passphrase_from(args)
        key = None if args.key is None else load_private_key(
            args.key, passphrase, unsafe_plaintext=passphrase is None)
        report = verify_path(args.path, _trust(args, None), key=key,
                             previous=args.previous)
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def _query(args: argparse.Namespace) -> LogQuery:
    return LogQuery(query_id=args.query_id, client=args.client, service=args.service,
                    user_id=args.user_id, since=args.since, until=args.until)


def _subjects(entry: LogEntry) -> str:
    """`` subjects=a,b`` for a logged response that names its data subjects."""
    if entry.kind != "response":
        return ""
    try:
        named = data_subjects_of(RestResponse.from_header_part(entry.header_part))
    except XRoadError:
        return ""
    return f" subjects={','.join(named)}" if named else ""


def _search(args: argparse.Namespace) -> int:
    config = SecurityServerConfig.from_file(args.config).from_env(secrets=False)

    async def search() -> list[StoredRecord]:
        async with _open_log(config) as (log, _engine):
            return await log.find(_query(args), args.limit)

    records = asyncio.run(search())
    for r in records:
        e = r.entry
        print(f"{r.sequence:>8} {e.created_at.isoformat()} {e.kind:<8} {e.direction:<8} "
              f"{e.status:<8} {e.query_id} {e.client} -> {e.service}"
              + (f" user={e.user_id}" if e.user_id else "")
              + _subjects(e)
              + ("" if r.stamp else " (not yet time-stamped)"))
    print(f"{len(records)} record(s)")
    return 0


def _export(args: argparse.Namespace) -> int:
    config = SecurityServerConfig.from_file(args.config).from_env(secrets=False)

    async def collect() -> tuple[bytes, int, int] | None:
        async with _open_log(config) as (log, _engine):
            return await export_query(log, args.query_id)

    exported = asyncio.run(collect())
    if exported is None:
        raise ValueError(f"no record of query {args.query_id!r} in the log")
    data, count, unstamped = exported
    args.out.write_bytes(data)
    print(f"exported {count} record(s) of query {args.query_id} to {args.out}"
          + (f"; {unstamped} not yet time-stamped" if unstamped else ""))
    return 0


def _archive(args: argparse.Namespace) -> int:
    config = SecurityServerConfig.from_file(args.config).from_env(secrets=False)
    settings = config.archive
    if settings is None:  # pragma: no cover - from_file always sets it
        raise ValueError("no [archive] settings")

    async def run() -> tuple[list[MadeArchive], int]:
        async with _open_log(config, create=True) as (log, engine):
            archiver = Archiver(log, engine, DirectoryTarget(settings.directory),
                                server_id=str(config.server_id), config=settings,
                                recipients=load_recipients(settings.recipients))
            now = datetime.now(UTC)
            return await archiver.archive(now), await archiver.purge(now)

    made, removed = asyncio.run(run())
    for a in made:
        print(f"archive {a.number}: records {a.first_sequence}..{a.last_sequence} -> "
              f"{settings.directory / a.name} (hash {a.archive_hash})")
    print(f"{len(made)} archive file(s) written, {removed} archived record(s) removed")
    return 0


