"""The archiver on a real message log (SQLite and PostgreSQL): archive files written,
chained and verifiable; records removed only once archived and past retention."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.engine import Engine

from security_server.archiver import Archiver, DirectoryTarget, live_checkpoint
from security_server.config import ArchiveConfig
from security_server.db import create_tables
from security_server.messagelog import LogQuery, MessageLog
from tests.auditkit import AuditPki, fill_log
from xchange.archive import check_succession, read_archive
from xchange.archive_crypto import decrypt_archive
from xchange.audit import verify_archive
from xchange.errors import ChainBrokenError
from xchange.messagelog import GENESIS

SERVER = "TEST/GOV/1001/ss1"


@pytest.fixture
def log(engine: Engine) -> Iterator[MessageLog]:
    create_tables(engine)
    log = MessageLog(engine)
    yield log
    log.close()


def archiver(log: MessageLog, engine: Engine, directory: Path, **settings: object) -> Archiver:
    config = ArchiveConfig(directory=directory, **settings)  # type: ignore[arg-type]
    return Archiver(log, engine, DirectoryTarget(directory), server_id=SERVER, config=config,
                    recipients=settings.pop("recipients", ()))  # type: ignore[arg-type]


async def test_archives_stamped_records_in_chained_files(
    log: MessageLog, engine: Engine, audit_pki: AuditPki, tmp_path: Path
) -> None:
    await fill_log(log, audit_pki, 4, batch=3, stamp_all=False)  # 8 records, 6 stamped
    arch = archiver(log, engine, tmp_path, max_records=4)
    now = audit_pki.now + timedelta(hours=1)
    made = await arch.archive(now)
    assert [(a.number, a.first_sequence, a.last_sequence) for a in made] == [(1, 1, 4),
                                                                           (2, 5, 6)]
    assert await arch.archive(now) == []  # records 7-8 are not stamped yet
    one = read_archive((tmp_path / made[0].name).read_bytes())
    two = read_archive((tmp_path / made[1].name).read_bytes())
    assert made[0].name == "TEST_GOV_1001_ss1-00000001.zip"
    assert one.linking.archive_hash == made[0].archive_hash
    check_succession(one.linking, two.linking)
    assert [c.sequence for c in verify_archive(one, audit_pki.trust)] == [1, 2, 3, 4]
    assert [c.sequence for c in verify_archive(two, audit_pki.trust)] == [5, 6]


async def test_min_age_holds_records_back(
    log: MessageLog, engine: Engine, audit_pki: AuditPki, tmp_path: Path
) -> None:
    await fill_log(log, audit_pki, 2, batch=2)
    arch = archiver(log, engine, tmp_path, min_age_seconds=3600.0)
    assert await arch.archive(audit_pki.now + timedelta(minutes=30)) == []
    made = await arch.archive(audit_pki.now + timedelta(hours=2))
    assert [(a.first_sequence, a.last_sequence) for a in made] == [(1, 4)]


async def test_retention_removes_whole_archives_and_the_live_log_verifies_from_them(
    log: MessageLog, engine: Engine, audit_pki: AuditPki, tmp_path: Path
) -> None:
    await fill_log(log, audit_pki, 3, batch=2)  # 6 records
    arch = archiver(log, engine, tmp_path, max_records=4, retention_days=30.0)
    now = audit_pki.now + timedelta(hours=1)
    await arch.archive(now)
    assert await arch.purge(now + timedelta(days=29)) == 0
    # Both archives are past retention, but the newest record stays: the chain goes on.
    assert await arch.purge(now + timedelta(days=31)) == 4
    remaining = await log.records_after(0, 100)
    assert [r.sequence for r in remaining] == [5, 6]
    checkpoint = await live_checkpoint(log, engine)
    assert checkpoint.sequence == 4
    report = await log.verify(checkpoint)
    assert (report.count, report.last_sequence) == (2, 6)
    with pytest.raises(ChainBrokenError, match="expected record 1"):
        await log.verify(GENESIS)


async def test_unarchived_records_are_never_removed(
    log: MessageLog, engine: Engine, audit_pki: AuditPki, tmp_path: Path
) -> None:
    await fill_log(log, audit_pki, 2, batch=2)
    arch = archiver(log, engine, tmp_path)
    assert await arch.purge(audit_pki.now + timedelta(days=365)) == 0
    assert len(await log.records_after(0, 100)) == 4


async def test_a_log_cut_at_the_start_without_archive_is_refused(
    log: MessageLog, engine: Engine, audit_pki: AuditPki
) -> None:
    await fill_log(log, audit_pki, 2, batch=2)
    await log.purge_through(2)
    with pytest.raises(ChainBrokenError, match="no archive holds the records before it"):
        await live_checkpoint(log, engine)


async def test_encrypted_archives_open_only_with_an_auditors_key(
    log: MessageLog, engine: Engine, audit_pki: AuditPki, tmp_path: Path
) -> None:
    await fill_log(log, audit_pki, 1, batch=2)
    auditor = ec.generate_private_key(ec.SECP256R1())
    arch = archiver(log, engine, tmp_path, recipients=(auditor.public_key(),))
    made = await arch.archive(audit_pki.now + timedelta(hours=1))
    assert made[0].encrypted and made[0].name.endswith(".zip.xenc")
    data = (tmp_path / made[0].name).read_bytes()
    assert read_archive(decrypt_archive(data, auditor)).linking.last_sequence == 2


async def test_find_by_each_criterion(log: MessageLog, audit_pki: AuditPki) -> None:
    await fill_log(log, audit_pki, 3, batch=2)
    assert [r.sequence for r in await log.find(LogQuery(query_id="q-3"), 10)] == [3, 4]
    assert len(await log.find(LogQuery(client="TEST/GOV/1001/benefits"), 10)) == 6
    assert len(await log.find(LogQuery(user_id="EE12345"), 10)) == 3
    assert await log.find(LogQuery(service="TEST/GOV/9/x/y"), 10) == []
    start = audit_pki.now + timedelta(minutes=1)
    found = await log.find(LogQuery(since=start + timedelta(seconds=5),
                                    until=start + timedelta(seconds=15)), 10)
    assert [r.sequence for r in found] == [3, 4]
    assert len(await log.find(LogQuery(), 2)) == 2


async def test_the_background_task_archives_at_start_and_survives_failures(
    log: MessageLog, engine: Engine, audit_pki: AuditPki, tmp_path: Path
) -> None:
    await fill_log(log, audit_pki, 1, batch=2)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the archive folder should be")
    failing = archiver(log, engine, blocked / "archives", interval_seconds=0.01)
    working = archiver(log, engine, tmp_path / "archives", interval_seconds=3600.0)

    def clock() -> datetime:
        return audit_pki.now + timedelta(hours=1)

    tasks = [asyncio.create_task(a.run(clock)) for a in (failing, working)]
    archive = tmp_path / "archives" / "TEST_GOV_1001_ss1-00000001.zip"
    for _ in range(3000):  # a generous bound for a loaded machine; usually a few tries
        if archive.exists() and await working.archive(clock()) == []:
            break  # written, and its row stored: nothing left to archive
        await asyncio.sleep(0.01)
    for task in tasks:
        assert not task.done()  # the failing one keeps trying
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert [p.name for p in (tmp_path / "archives").iterdir()] == [
        "TEST_GOV_1001_ss1-00000001.zip"]
