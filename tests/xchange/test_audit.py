"""Offline verification of evidence: what verifies, and every way a record can fail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

import pytest
from cryptography import x509

from certs.ca import DevCA
from tests.auditkit import AuditPki, make_log, stamp_batch, trust_of, with_entry
from xchange import audit as audit_module
from xchange.audit import AuditMemo, AuditTrust, verify_all, verify_evidence
from xchange.certstatus import approved_ca_of
from xchange.errors import (
    CertificateValidationError,
    ChainBrokenError,
    EvidenceError,
    StampInvalidError,
)
from xchange.evidence import MessageEvidence
from xchange.globalconf import ApprovedCA
from xchange.messagelog import chain_record


@pytest.fixture(scope="module")
def log(audit_pki: AuditPki) -> list[MessageEvidence]:
    return make_log(audit_pki, 3, batch=4)


def rehashed(evidence: MessageEvidence, **changes: object) -> MessageEvidence:
    """A record altered by someone who also recomputed its hash."""
    record = with_entry(evidence, **changes).record
    new = chain_record(record.entry, record.sequence, record.prev_hash)
    return replace(evidence, record=replace(new, stamp=record.stamp))


def fails(evidence: MessageEvidence, trust: AuditTrust, match: str,
          error: type[Exception] = EvidenceError) -> None:
    with pytest.raises(error, match=match) as info:
        verify_evidence(evidence, trust)
    assert info.value.sequence == evidence.record.sequence  # type: ignore[attr-defined]


def test_an_unaltered_log_verifies(log: list[MessageEvidence], audit_pki: AuditPki) -> None:
    checks = verify_all(log, audit_pki.trust)
    assert [c.sequence for c in checks] == [1, 2, 3, 4, 5, 6]
    assert [c.signer for c in checks[:2]] == ["TEST/GOV/1001", "TEST/GOV/1002"]
    assert all(c.stamped_at is not None and c.ocsp_this_update is not None for c in checks)


def test_altered_content_breaks_the_record_hash(log: list[MessageEvidence],
                                                audit_pki: AuditPki) -> None:
    fails(with_entry(log[1], body=b'{"name": "Jaan"}'), audit_pki.trust,
          "does not match its hash", ChainBrokenError)
    fails(with_entry(log[0], user_id="EE999"), audit_pki.trust, "does not match its hash",
          ChainBrokenError)


def test_altered_and_rehashed_content_fails_the_signature(
    log: list[MessageEvidence], audit_pki: AuditPki
) -> None:
    fails(rehashed(log[1], body=b'{"name": "Jaan"}'), audit_pki.trust,
          "signature: signature does not verify")
    fails(rehashed(log[0], user_id="EE999"), audit_pki.trust,
          "does not name the logged message id")
    fails(rehashed(log[0], client="TEST/GOV/1002/register"), audit_pki.trust,
          "does not name the logged message id")


def test_a_rejected_record_is_noted_not_failed(log: list[MessageEvidence],
                                               audit_pki: AuditPki) -> None:
    rejected = rehashed(log[0], body=b"x", status="rejected",
                        error_code="server.serverproxy.invalid_signature")
    rejected = stamp_batch(audit_pki, [replace(rejected.record, stamp=None)],
                           audit_pki.now + timedelta(minutes=10))[0]
    check = verify_evidence(rejected, audit_pki.trust)
    assert check.signer is None and check.note == "signature does not verify"


def test_ocsp_evidence_is_required_good_and_fresh(log: list[MessageEvidence],
                                                  audit_pki: AuditPki) -> None:
    fails(rehashed(log[0], ocsp_responses=()), audit_pki.trust, "OCSP: no OCSP response")
    # the provider's staple does not prove the consumer's certificate
    fails(rehashed(log[0], ocsp_responses=log[1].record.entry.ocsp_responses), audit_pki.trust,
          "OCSP: no OCSP response is stapled")
    # a record made two hours after its staple was produced: not valid at signing time
    late = rehashed(log[0], created_at=log[0].record.entry.created_at + timedelta(hours=2))
    fails(late, audit_pki.trust, "OCSP: .*stale")


def test_merkle_path_and_token_are_checked(log: list[MessageEvidence],
                                           audit_pki: AuditPki) -> None:
    evidence = log[2]
    stamp, batch = evidence.record.stamp, evidence.batch
    assert stamp is not None and batch is not None
    bad_path = replace(stamp, path=(bytes(32), *stamp.path[1:]))
    fails(replace(evidence, record=replace(evidence.record, stamp=bad_path)), audit_pki.trust,
          "Merkle path does not lead", StampInvalidError)
    other = log[5].batch
    assert other is not None and other.root != batch.root
    fails(replace(evidence, batch=replace(batch, token=other.token)), audit_pki.trust,
          "token of batch .*imprint", StampInvalidError)
    fails(replace(evidence, batch=replace(batch, gen_time=other.gen_time)), audit_pki.trust,
          "its token says", StampInvalidError)
    unstamped = MessageEvidence(record=replace(evidence.record, stamp=None))
    fails(unstamped, audit_pki.trust, "not time-stamped", StampInvalidError)
    assert verify_evidence(unstamped, audit_pki.trust, require_stamp=False).stamped_at is None


def test_only_the_given_anchors_are_trusted(
    log: list[MessageEvidence], audit_pki: AuditPki, tmp_path_factory: pytest.TempPathFactory
) -> None:
    stranger = DevCA.create(tmp_path_factory.mktemp("other-ca"), "TEST", now=audit_pki.now)
    tsa_cert: x509.Certificate = audit_pki.tsa.certificate
    fails(log[0], trust_of(stranger.certificate, tsa_cert), "signature: signing certificate")
    _key, other_tsa = stranger.issue_tsa_cert("Other TSA", now=audit_pki.now)
    fails(log[0], replace(audit_pki.trust, tsas=(other_tsa,)), "token of batch",
          StampInvalidError)
    fails(log[0], replace(audit_pki.trust, tsas=()), "no TSA certificate", StampInvalidError)


def test_a_shared_memo_still_checks_what_differs(log: list[MessageEvidence],
                                                 audit_pki: AuditPki) -> None:
    """The memo remembers verified tokens and staples, not records: a record whose batch
    token was swapped fails even after its batch's genuine token verified for others."""
    batch, other = log[0].batch, log[5].batch
    assert batch is not None and other is not None
    forged = replace(log[1], batch=replace(batch, token=other.token))
    with pytest.raises(StampInvalidError, match="imprint") as info:
        verify_all([log[0], forged], audit_pki.trust)
    assert info.value.sequence == 2


def test_the_memo_remembers_issuers_per_certificate_and_trust(
    audit_pki: AuditPki, tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[x509.Certificate] = []
    real = approved_ca_of

    def counted(cert: x509.Certificate, cas: Sequence[ApprovedCA], *, code: str
                ) -> ApprovedCA:
        asked.append(cert)
        return real(cert, cas, code=code)

    monkeypatch.setattr(audit_module, "approved_ca_of", counted)
    memo, trust = AuditMemo(), audit_pki.trust
    leaf = audit_pki.consumer.chain[0]
    assert memo.issuer(leaf, trust) is memo.issuer(leaf, trust) is trust.cas[0]
    assert len(asked) == 1
    # Another tuple of CAs is another question, even with the same CA in it.
    other = replace(trust, cas=tuple(list(trust.cas)))
    assert other.cas is not trust.cas
    assert memo.issuer(leaf, other) is trust.cas[0]
    assert len(asked) == 2
    assert memo.issuer(audit_pki.provider.chain[0], trust) is trust.cas[0]
    assert len(asked) == 3
    # A certificate no approved CA issued is refused every time, never remembered.
    stranger = DevCA.create(tmp_path_factory.mktemp("stranger"), "TEST", now=audit_pki.now)
    strange = replace(trust, cas=(ApprovedCA("stranger", stranger.certificate),))
    for _ in range(2):
        with pytest.raises(CertificateValidationError, match="not issued by an approved CA"):
            memo.issuer(leaf, strange)
    assert len(asked) == 5
