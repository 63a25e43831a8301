"""``xchange ss verify-log``: check a security server's message log.

Three checks over every record: the hash chain (each record's hash recomputed, each link to
the previous record, no gap); each accepted message's signature (by the member the message
names, with a certificate that chained to an approved CA when it was logged); and its
time-stamp: the token of its batch (signed by an approved TSA, over the batch's Merkle root)
and its Merkle path to that root.  Records logged since the last batch are counted as not
yet stamped; that is not a failure.
Records logged as *rejected* are evidence of refused messages; their signatures may not
verify (that may be why they were refused), so only those of accepted records must.

The approved CAs come from the server's last good global configuration, verified against its
configuration anchor (expiry is not applied: this is a look at the past).  A fully offline
audit against archived trust anchors is ``xchange audit verify`` (message-log issue).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from security_server.confclient import CACHE_FILE
from security_server.config import SecurityServerConfig
from security_server.db import create_db_engine
from security_server.logkeys import load_keyring
from security_server.messagelog import MessageLog, MessageRecord
from xchange.errors import StampInvalidError, XRoadError
from xchange.globalconf import ConfigurationAnchor, GlobalConf, verify_envelope
from xchange.identifiers import ClientId, ServiceId
from xchange.logbatch import TimestampBatch, verify_batch, verify_record_stamp
from xchange.messagelog import ChainReport, StoredRecord
from xchange.signing import verify_message

__all__ = ["LogVerification", "check_log", "verify_log"]


@dataclass
class LogVerification:
    chain: ChainReport
    requests: int = 0
    responses: int = 0
    rejected: int = 0
    signatures_verified: int = 0
    batches_verified: int = 0
    stamps_verified: int = 0
    unstamped: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _anchors(config: SecurityServerConfig) -> GlobalConf:
    anchor = ConfigurationAnchor.from_json(config.anchor.read_bytes())
    payload = verify_envelope((config.state_dir / CACHE_FILE).read_bytes(), anchor.certificates)
    return GlobalConf.from_payload(payload)


def _expected_signer(record: StoredRecord) -> ClientId:
    if record.entry.kind == "request":
        return ClientId.parse(record.entry.client)
    return ServiceId.parse(record.entry.service).provider


async def _check(config: SecurityServerConfig) -> LogVerification:
    conf = _anchors(config)
    url = sa.make_url(config.database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        # Opening it would create an empty log that "verifies": refuse a wrong path instead.
        raise ValueError(f"no message log at {url.database}")
    keyring = load_keyring(config.encryption_keys) if config.encryption_keys else None
    engine = create_db_engine(config.database_url)
    try:
        has_log = sa.inspect(engine).has_table(MessageRecord.__tablename__)
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        raise ValueError(f"cannot open the message log database: {exc}") from exc
    if not has_log:
        engine.dispose()
        raise ValueError("the database holds no message log")
    log = MessageLog(engine, keyring=keyring)
    try:
        result = LogVerification(chain=await log.verify())
        batches = await _verified_batches(log, conf, result)
        for record in await log.records():
            _check_stamp(record, batches, result)
            entry = record.entry
            if entry.kind == "request":
                result.requests += 1
            else:
                result.responses += 1
            try:
                verify_message(entry.signature, entry.header_part, entry.body,
                               expected_signer=_expected_signer(record),
                               anchors=conf.trust_anchors(), at=entry.created_at,
                               code="server.serverproxy.invalid_signature")
                result.signatures_verified += 1
            except XRoadError as exc:
                # A record logged as rejected may well be rejected for its signature.
                if entry.status != "rejected":
                    result.failures.append(f"record {record.sequence}: {exc.message}")
            if entry.status == "rejected":
                result.rejected += 1
        return result
    finally:
        log.close()
        engine.dispose()


async def _verified_batches(log: MessageLog, conf: GlobalConf,
                            result: LogVerification) -> dict[int, TimestampBatch]:
    """The batches whose tokens verify against the approved TSAs; the others are failures."""
    tsa_certs = [t.certificate for t in conf.approved_tsas]
    good = {}
    for batch in await log.batches():
        try:
            verify_batch(batch, tsa_certs)
        except StampInvalidError as exc:
            result.failures.append(f"record {exc.sequence}: {exc.reason}")
            continue
        good[batch.id] = batch
        result.batches_verified += 1
    return good


def _check_stamp(record: StoredRecord, batches: dict[int, TimestampBatch],
                 result: LogVerification) -> None:
    if record.stamp is None:
        result.unstamped += 1
        return
    batch = batches.get(record.stamp.batch_id)
    if batch is None:
        return  # its batch's failure is reported already
    try:
        verify_record_stamp(record, batch)
        result.stamps_verified += 1
    except StampInvalidError as exc:
        result.failures.append(f"record {exc.sequence}: {exc.reason}")


def check_log(config_path: Path) -> LogVerification:
    """Verify the log of the security server configured in ``config_path``.

    A broken chain raises :class:`~xchange.messagelog.ChainBrokenError`; signature failures
    are collected in the result.
    """
    return asyncio.run(_check(SecurityServerConfig.from_file(config_path).from_env()))


def verify_log(config_path: Path) -> int:
    result = check_log(config_path)
    if result.chain.count:
        print(f"hash chain intact: {result.chain.count} records "
              f"(sequence {result.chain.first_sequence}..{result.chain.last_sequence})")
    else:
        print("the message log is empty")
    print(f"{result.requests} requests, {result.responses} responses, "
          f"{result.rejected} logged as rejected")
    print(f"signatures verified: {result.signatures_verified}")
    print(f"time-stamps verified: {result.stamps_verified} records in "
          f"{result.batches_verified} batches; {result.unstamped} not yet time-stamped")
    for failure in result.failures:
        print(f"FAILED {failure}")
    return 0 if result.ok else 1
