"""scan_log: one pass over a log checks its chain and every signature."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from certs.ca import DevCA, IssuedCredentials
from security_server.runtime import make_entry
from xchange.identifiers import ClientId
from xchange.messagelog import GENESIS_HASH, ChainBrokenError, StoredRecord, chain_record
from xchange.rest import RestRequest, RestResponse, digest_payload, request_hash_of
from xchange.signing import SigningIdentity, sign_message, sign_payload
from xchange_cli.logverify import scan_log

CLIENT, PROVIDER = "TEST/GOV/2222/benefits", "TEST/GOV/1111/register"


@pytest.fixture(scope="module")
def identities(issue_member_sign: Callable[..., IssuedCredentials]
               ) -> tuple[SigningIdentity, SigningIdentity]:
    def identity(member: str) -> SigningIdentity:
        creds = issue_member_sign(member)
        return SigningIdentity(ClientId.parse(member), creds.key, creds.chain)

    return identity("TEST/GOV/2222"), identity("TEST/GOV/1111")


def _records(ids: tuple[SigningIdentity, SigningIdentity], at: datetime, *,
             forged: int | None = None, rejected: int | None = None) -> list[StoredRecord]:
    """Request/response pairs chained into a log; record ``forged`` carries another
    message's signature, logged as rejected when it is also ``rejected``."""
    consumer, provider = ids
    entries: list[Any] = []
    for i in range(3):
        req = RestRequest.from_is("GET", f"/r1/{PROVIDER}/persons/{i}",
                                  {"X-Road-Client": CLIENT, "X-Road-Id": str(uuid.uuid4())}, ())
        part = req.header_part()
        payload = digest_payload(part, b"")
        entries.append(make_entry(req, "request", "outgoing", part, b"",
                                  sign_payload(consumer, payload, signed_at=at,
                                               nonce=uuid.uuid4().hex), at))
        resp = RestResponse(message_id=req.message_id, client=req.client, service=req.service,
                            request_hash=request_hash_of(payload), status=200, headers=())
        rpart = resp.header_part()
        entries.append(make_entry(req, "response", "incoming", rpart, b"{}",
                                  sign_message(provider, rpart, b"{}"), at))
    if forged is not None:
        e = entries[forged]
        entries[forged] = make_entry(
            RestRequest.from_header_part(entries[0].header_part), e.kind, e.direction,
            e.header_part, e.body, entries[(forged + 2) % 6].signature, at,
            error_code="server.clientproxy.invalid_signature" if forged == rejected else None)
    out, prev = [], GENESIS_HASH
    for n, entry in enumerate(entries, start=1):
        record = chain_record(entry, n, prev)
        out.append(record)
        prev = record.record_hash
    return out


def test_a_sound_log_verifies_every_record(
    identities: tuple[SigningIdentity, SigningIdentity], dev_ca: DevCA, pki_now: datetime
) -> None:
    result = scan_log(iter(_records(identities, pki_now)), [dev_ca.certificate])
    assert result.ok
    assert (result.chain.count, result.requests, result.responses) == (6, 3, 3)
    assert (result.signatures_verified, result.rejected) == (6, 0)


def test_a_signature_that_does_not_verify_is_reported_at_its_record(
    identities: tuple[SigningIdentity, SigningIdentity], dev_ca: DevCA, pki_now: datetime
) -> None:
    result = scan_log(_records(identities, pki_now, forged=3), [dev_ca.certificate])
    assert not result.ok
    assert len(result.failures) == 1 and result.failures[0].startswith("record 4: ")
    assert result.signatures_verified == 5


def test_a_bad_signature_logged_as_rejected_is_evidence_not_a_failure(
    identities: tuple[SigningIdentity, SigningIdentity], dev_ca: DevCA, pki_now: datetime
) -> None:
    result = scan_log(_records(identities, pki_now, forged=2, rejected=2), [dev_ca.certificate])
    assert result.ok
    assert (result.rejected, result.signatures_verified) == (1, 5)


def test_untrusted_signers_fail_and_a_broken_chain_raises(
    identities: tuple[SigningIdentity, SigningIdentity], pki_now: datetime
) -> None:
    result = scan_log(_records(identities, pki_now), [])
    assert len(result.failures) == 6
    records = _records(identities, pki_now)
    del records[2]
    with pytest.raises(ChainBrokenError) as caught:
        scan_log(records, [])
    assert caught.value.sequence == 3
