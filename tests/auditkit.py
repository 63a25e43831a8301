"""A small, real message log for audit tests: signed messages, stapled OCSP responses, batch
time-stamps from a real TSA, all made with the session's development CA."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from certs.ocsp import OcspResponder
from certs.tsa import TimeStampAuthority
from xchange.audit import AuditTrust, merkle_leaf
from xchange.evidence import BatchStamp, MerkleStep, MessageEvidence
from xchange.globalconf import ApprovedCA
from xchange.identifiers import ClientId, ServiceId
from xchange.messagelog import GENESIS_HASH, LogEntry, StoredRecord, chain_record
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
                 first: int = 1, prev_hash: str = GENESIS_HASH
                 ) -> list[tuple[StoredRecord, tuple[bytes, ...]]]:
    """A consumer server's log: per query an outgoing request and an incoming response."""
    out: list[tuple[StoredRecord, tuple[bytes, ...]]] = []
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
                             status="ok", error_code=None, created_at=at)
            record = chain_record(entry, sequence, prev)
            out.append((record, (_staple(pki, identity, at),)))
            sequence, prev = sequence + 1, record.record_hash
    return out


def _tree_paths(leaves: list[bytes]) -> tuple[bytes, list[list[MerkleStep]]]:
    paths: list[list[MerkleStep]] = [[] for _ in leaves]
    level = [(leaf, [i]) for i, leaf in enumerate(leaves)]
    while len(level) > 1:
        nxt = []
        for j in range(0, len(level), 2):
            if j + 1 == len(level):
                nxt.append(level[j])
                continue
            (left, lidx), (right, ridx) = level[j], level[j + 1]
            for i in lidx:
                paths[i].append(MerkleStep("right", right))
            for i in ridx:
                paths[i].append(MerkleStep("left", left))
            nxt.append((hashlib.sha256(b"\x01" + left + right).digest(), lidx + ridx))
        level = nxt
    return level[0][0], paths


def stamp_batch(pki: AuditPki, records: list[tuple[StoredRecord, tuple[bytes, ...]]],
                at: datetime, serial: int = 1) -> list[MessageEvidence]:
    """One Merkle tree and one TSA token over ``records``."""
    leaves = [merkle_leaf(r) for r, _ in records]
    root, paths = _tree_paths(leaves)
    query = timestamp_request(root, nonce=serial)
    token = parse_timestamp_response(pki.tsa.respond(query, at, serial), data_hash=root,
                                     nonce=serial)
    return [
        MessageEvidence(record=r, ocsp_responses=staples,
                        stamp=BatchStamp(token=token, hash_alg="sha256", leaf=leaf, root=root,
                                         path=tuple(path)))
        for (r, staples), leaf, path in zip(records, leaves, paths, strict=True)
    ]


def make_log(pki: AuditPki, queries: int, *, batch: int = 3, first: int = 1,
             prev_hash: str = GENESIS_HASH, offset: timedelta = timedelta(minutes=1)
             ) -> list[MessageEvidence]:
    """``queries`` queries (two records each), time-stamped in batches of ``batch`` records."""
    start = pki.now + offset
    records = make_records(pki, queries, start=start, first=first, prev_hash=prev_hash)
    out: list[MessageEvidence] = []
    for i in range(0, len(records), batch):
        chunk = records[i:i + batch]
        out += stamp_batch(pki, chunk, chunk[-1][0].entry.created_at + timedelta(seconds=30),
                           serial=first + i)
    return out


def with_entry(evidence: MessageEvidence, **changes: Any) -> MessageEvidence:
    """``evidence`` with record fields changed but its stored hash kept (a tampered record)."""
    record = evidence.record
    return replace(evidence, record=replace(record, entry=replace(record.entry, **changes)))


def trust_of(ca_cert: object, tsa_cert: object) -> AuditTrust:
    return AuditTrust(cas=(ApprovedCA("Test CA", ca_cert),),  # type: ignore[arg-type]
                      tsas=(tsa_cert,))  # type: ignore[arg-type]
