"""A small, real message log for audit tests: signed messages, stapled OCSP responses, batch
time-stamps from a real TSA, all made with the session's development CA."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from certs.ocsp import OcspResponder
from certs.tsa import TimeStampAuthority
from xchange.audit import AuditTrust
from xchange.evidence import MessageEvidence
from xchange.globalconf import ApprovedCA
from xchange.identifiers import ClientId, ServiceId
from xchange.logbatch import TimestampBatch, plan_batch
from xchange.messagelog import GENESIS_HASH, LogEntry, RecordStamp, StoredRecord, chain_record
from xchange.ocsp import ocsp_request
from xchange.rest import RestRequest, RestResponse, request_hash
from xchange.signing import SigningIdentity, sign_message
from xchange.timestamp import parse_timestamp_response, timestamp_request

CLIENT = ClientId.parse("TEST/GOV/1001/benefits")
SERVICE = ServiceId.parse("TEST/GOV/1002/register/persons")


@dataclass(frozen=True)
class AuditPki:
    consumer: SigningIdentity
    provider: SigningIdentity
    ocsp: OcspResponder
    tsa: TimeStampAuthority
    trust: AuditTrust
    now: datetime


def _staple(pki: AuditPki, identity: SigningIdentity, at: datetime) -> bytes:
    return pki.ocsp.respond(ocsp_request(identity.chain[0], pki.ocsp.signer.certificate), at)


def make_records(pki: AuditPki, queries: int, *, start: datetime,
                 first: int = 1, prev_hash: str = GENESIS_HASH) -> list[StoredRecord]:
    """A consumer server's log: per query an outgoing request and an incoming response."""
    out: list[StoredRecord] = []
    sequence, prev = first, prev_hash
    for q in range(queries):
        at = start + timedelta(seconds=10 * q)
        request = RestRequest(message_id=f"q-{first + 2 * q}", client=CLIENT, service=SERVICE,
                              method="GET", path=f"/persons/{q}", query="", headers=(),
                              user_id="EE12345", issue=None)
        req_header, req_body = request.header_part(), b""
        response = RestResponse(message_id=request.message_id, client=CLIENT, service=SERVICE,
                                request_hash=request_hash(req_header, req_body), status=200,
                                headers=(("content-type", "application/json"),))
        resp_header, resp_body = response.header_part(), b'{"name": "Mari"}'
        for kind, direction, header, body, identity in (
            ("request", "outgoing", req_header, req_body, pki.consumer),
            ("response", "incoming", resp_header, resp_body, pki.provider),
        ):
            entry = LogEntry(query_id=request.message_id, kind=kind,  # type: ignore[arg-type]
                             direction=direction,  # type: ignore[arg-type]
                             client=str(CLIENT), service=str(SERVICE),
                             user_id="EE12345" if kind == "request" else None, issue=None,
                             header_part=header, body=body,
                             signature=sign_message(identity, header, body, signed_at=at),
                             status="ok", error_code=None, created_at=at,
                             ocsp_responses=(_staple(pki, identity, at),))
            record = chain_record(entry, sequence, prev)
            out.append(record)
            sequence, prev = sequence + 1, record.record_hash
    return out


def stamp_batch(pki: AuditPki, records: list[StoredRecord], at: datetime,
                batch_id: int = 1) -> list[MessageEvidence]:
    """One Merkle tree and one TSA token over ``records``."""
    plan = plan_batch(records)
    query = timestamp_request(plan.root, nonce=batch_id)
    token = parse_timestamp_response(pki.tsa.respond(query, at, batch_id), data_hash=plan.root,
                                     nonce=batch_id)
    batch = TimestampBatch(id=batch_id, first_sequence=plan.first_sequence,
                           last_sequence=plan.last_sequence, root=plan.root, token=token,
                           gen_time=at.replace(microsecond=0))
    return [MessageEvidence(record=replace(r, stamp=RecordStamp(batch_id, path)), batch=batch)
            for r, path in zip(records, plan.paths, strict=True)]


def make_log(pki: AuditPki, queries: int, *, batch: int = 3, first: int = 1,
             prev_hash: str = GENESIS_HASH, offset: timedelta = timedelta(minutes=1)
             ) -> list[MessageEvidence]:
    """``queries`` queries (two records each), time-stamped in batches of ``batch`` records."""
    start = pki.now + offset
    records = make_records(pki, queries, start=start, first=first, prev_hash=prev_hash)
    out: list[MessageEvidence] = []
    for i in range(0, len(records), batch):
        chunk = records[i:i + batch]
        out += stamp_batch(pki, chunk, chunk[-1].entry.created_at + timedelta(seconds=30),
                           batch_id=first + i)
    return out


def with_entry(evidence: MessageEvidence, **changes: Any) -> MessageEvidence:
    """``evidence`` with record fields changed but its stored hash kept (a tampered record)."""
    record = evidence.record
    return replace(evidence, record=replace(record, entry=replace(record.entry, **changes)))


def trust_of(ca_cert: object, tsa_cert: object) -> AuditTrust:
    return AuditTrust(cas=(ApprovedCA("Test CA", ca_cert),),  # type: ignore[arg-type]
                      tsas=(tsa_cert,))  # type: ignore[arg-type]
