"""``xchange ss verify-log``: check a security server's message log.

Two checks over every record: the hash chain (each record's hash recomputed, each link to
the previous record, no gap), and each accepted message's signature (by the member the
message names, with a certificate that chained to an approved CA when it was logged).
Records logged as *rejected* are evidence of refused messages; their signatures may not
verify (that may be why they were refused), so only those of accepted records must.

The approved CAs come from the server's last good global configuration, verified against its
configuration anchor and the signing keys later configurations announced (expiry is not
applied: this is a look at the past).

Speed: one pass over the log, read in batches, each record's chain link and signature
checked as it streams by; memory stays bounded whatever the log's size.  A fully offline
audit against archived trust anchors is ``xchange audit verify`` (message-log issue).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from cryptography import x509

from security_server.confclient import CACHE_FILE, learned_keys
from security_server.config import SecurityServerConfig
from security_server.db import create_db_engine
from security_server.messagelog import MessageLog, MessageRecord
from xchange.errors import XRoadError
from xchange.globalconf import ConfigurationAnchor, GlobalConf, verify_envelope
from xchange.identifiers import ClientId, ServiceId
from xchange.messagelog import GENESIS, ChainReport, StoredRecord, verify_chain
from xchange.rest import digest_payload
from xchange.signing import verify_payload

__all__ = ["LogVerification", "check_log", "scan_log", "verify_log"]


_EMPTY_REPORT = ChainReport(count=0, first_sequence=None, last_sequence=GENESIS.sequence,
                             last_hash=GENESIS.record_hash)


@dataclass
class LogVerification:
    chain: ChainReport
    requests: int = 0
    responses: int = 0
    rejected: int = 0
    signatures_verified: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _anchors(config: SecurityServerConfig) -> GlobalConf:
    anchor = ConfigurationAnchor.from_json(config.anchor.read_bytes())
    # After a key rotation the stored copy is signed by a key the anchor does not hold, but
    # an earlier configuration announced: trusted as the server itself trusts it.
    trusted = [*anchor.certificates, *learned_keys(config.state_dir)]
    payload = verify_envelope((config.state_dir / CACHE_FILE).read_bytes(), trusted)
    return GlobalConf.from_payload(payload)


@functools.lru_cache(maxsize=1024)
def _client(text: str) -> ClientId:
    return ClientId.parse(text)


def _signer(record: StoredRecord) -> str:
    e = record.entry
    return e.client if e.kind == "request" else str(ServiceId.parse(e.service).provider)


def scan_log(records: Iterable[StoredRecord],
             anchors: Sequence[x509.Certificate]) -> LogVerification:
    """Check the chain and every signature of ``records`` (in sequence order) in one pass,
    in constant memory.  A broken chain raises
    :class:`~xchange.messagelog.ChainBrokenError`; signature failures of records not logged
    as rejected are collected."""
    result = LogVerification(chain=_EMPTY_REPORT)

    def check(stream: Iterable[StoredRecord]) -> Iterator[StoredRecord]:
        for record in stream:
            e = record.entry
            if e.kind == "request":
                result.requests += 1
            else:
                result.responses += 1
            try:
                verify_payload(e.signature, digest_payload(e.header_part, e.body),
                               expected_signer=_client(_signer(record)), anchors=anchors,
                               at=e.created_at, code="server.serverproxy.invalid_signature")
                result.signatures_verified += 1
            except XRoadError as exc:
                # A record logged as rejected may well be rejected for its signature.
                if e.status != "rejected":
                    result.failures.append(f"record {record.sequence}: {exc.message}")
            if e.status == "rejected":
                result.rejected += 1
            yield record

    result.chain = verify_chain(check(records))
    return result


async def _check(config: SecurityServerConfig) -> LogVerification:
    conf = _anchors(config)
    url = sa.make_url(config.database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        # Opening it would create an empty log that "verifies": refuse a wrong path instead.
        raise ValueError(f"no message log at {url.database}")
    engine = create_db_engine(config.database_url)
    try:
        has_log = sa.inspect(engine).has_table(MessageRecord.__tablename__)
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        raise ValueError(f"cannot open the message log database: {exc}") from exc
    if not has_log:
        engine.dispose()
        raise ValueError("the database holds no message log")
    log = MessageLog(engine)
    try:
        return await asyncio.to_thread(scan_log, log.iter_records(), conf.trust_anchors())
    finally:
        log.close()
        engine.dispose()


def check_log(config_path: Path) -> LogVerification:
    """Verify the log of the security server configured in ``config_path``.

    A broken chain raises :class:`~xchange.messagelog.ChainBrokenError`; signature failures
    are collected in the result.
    """
    config = SecurityServerConfig.from_file(config_path).from_env(secrets=False)  # no keys used
    return asyncio.run(_check(config))


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
    for failure in result.failures:
        print(f"FAILED {failure}")
    return 0 if result.ok else 1
