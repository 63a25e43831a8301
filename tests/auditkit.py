"""A small, real message log for audit tests: signed messages, stapled OCSP responses, batch
time-stamps from a real TSA, all made with the session's development CA."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from certs.ca import DevCA
from certs.ocsp import OcspResponder
from certs.tsa import TimeStampAuthority
from security_server.messagelog import MessageLog
from xchange.archive import ARCHIVE_MIMETYPE, LINKING_NAME, next_link
from xchange.asic import write_container
from xchange.audit import AuditTrust
from xchange.canonical import canonical_json, parse_json
from xchange.evidence import MessageEvidence
from xchange.globalconf import ApprovedCA
from xchange.identifiers import ClientId, ServiceId
from xchange.logbatch import TimestampBatch, plan_batch
from xchange.messagelog import GENESIS_HASH, LogEntry, RecordStamp, StoredRecord, chain_record
from xchange.ocsp import ocsp_request
from xchange.rest import RestRequest, RestResponse, request_hash
from xchange.signing import SigningIdentity, sign_message
from xchange.timestamp import (
    parse_timestamp_response,
    timestamp_request,
    verify_timestamp_token,
)

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


def make_audit_pki(ca: DevCA, directory: Path, now: datetime) -> AuditPki:
    """Signing identities of two members, the CA's OCSP responder and a TSA, issued at
    ``now`` by ``ca``."""

    def identity(member: str) -> SigningIdentity:
        issued = ca.issue_key_and_cert(directory / member.replace("/", "_"), "sign",
                                       ClientId.parse(member), member_name="Test Member",
                                       now=now)
        return SigningIdentity(ClientId.parse(member), issued.key, issued.chain)

    key, cert = ca.issue_tsa_cert("Test TSA", now=now)
    tsa = TimeStampAuthority(key, [cert, ca.certificate])
    return AuditPki(consumer=identity("TEST/GOV/1001"), provider=identity("TEST/GOV/1002"),
                    ocsp=OcspResponder(ca), tsa=tsa,
                    trust=trust_of(ca.certificate, tsa.certificate), now=now)


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


async def fill_log(log: MessageLog, pki: AuditPki, queries: int, *, batch: int = 3,
                   first: int = 1, prev_hash: str = GENESIS_HASH,
                   offset: timedelta = timedelta(minutes=1), stamp_all: bool = True) -> None:
    """Append ``queries`` queries to a real message log and stamp them in batches (the last
    partial batch too, unless ``stamp_all`` is false)."""
    records = make_records(pki, queries, start=pki.now + offset, first=first,
                           prev_hash=prev_hash)
    for record in records:
        await log.append(record.entry, error_code="server.clientproxy.logging_failed")
    for i in range(0, len(records), batch):
        chunk = records[i:i + batch]
        if len(chunk) < batch and not stamp_all:
            break
        plan = plan_batch(chunk)
        at = chunk[-1].entry.created_at + timedelta(seconds=30)
        der = parse_timestamp_response(pki.tsa.respond(timestamp_request(plan.root, nonce=7),
                                                       at, 7 + i), data_hash=plan.root, nonce=7)
        token = verify_timestamp_token(der, data_hash=plan.root,
                                       tsa_certs=[pki.tsa.certificate])
        await log.add_batch(plan, token)


# -- tampering with archive files, as a forger with write access would


def unpack(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist() if n not in ("mimetype",
                                                                   "META-INF/manifest.xml")}


def repack(files: dict[str, bytes]) -> bytes:
    return write_container(
        [(n, "application/json" if n == LINKING_NAME else "application/vnd.etsi.asic-e+zip", d)
         for n, d in files.items()], mimetype=ARCHIVE_MIMETYPE)


def relink(files: dict[str, bytes], edit: Callable[[list[dict[str, Any]]], object]) -> None:
    """Edit the linking file's container list and recompute every hash and link, as a forger
    with write access would."""
    doc = parse_json(files[LINKING_NAME])
    edit(doc["containers"])
    link = doc["previous_archive"]
    for c in doc["containers"]:
        c["sha256"] = hashlib.sha256(files[c["name"]]).hexdigest()
        link = c["link"] = next_link(link, c["sha256"])
    files[LINKING_NAME] = canonical_json(doc)


def swap_bodies(container: bytes) -> bytes:
    files = unpack(container)
    files["message/body"] = b'{"name": "Someone else"}'
    types = {"message/header.json": "application/json", "message/body":
             "application/octet-stream", "message/signature.jws": "application/jose",
             "evidence/record.json": "application/json",
             "evidence/timestamp.tst": "application/vnd.etsi.timestamp-token"}
    return write_container([(n, types.get(n, "application/ocsp-response"), d)
                            for n, d in files.items()])
