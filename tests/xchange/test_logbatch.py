"""Tests of batch time-stamps: planning a batch, verifying its token and every record's path,
and detecting each way a stamp can be wrong.  Tokens come from the real test TSA."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import pytest
from cryptography import x509

from certs.ca import DevCA
from certs.keys import PrivateKey
from certs.tsa import TimeStampAuthority
from tests.xchange.test_messagelog import make_chain
from xchange.errors import StampInvalidError
from xchange.logbatch import (
    BatchPlan,
    TimestampBatch,
    plan_batch,
    record_leaf,
    verify_batch,
    verify_record_stamp,
)
from xchange.merkle import merkle_root
from xchange.messagelog import RecordStamp, StoredRecord
from xchange.timestamp import parse_timestamp_response, timestamp_request


def stamp(tsa: TimeStampAuthority, plan: BatchPlan, at: datetime, batch_id: int = 1
          ) -> TimestampBatch:
    reply = tsa.respond(timestamp_request(plan.root, nonce=7), at, serial=batch_id)
    token = parse_timestamp_response(reply, data_hash=plan.root, nonce=7)
    batch = TimestampBatch(id=batch_id, first_sequence=plan.first_sequence,
                           last_sequence=plan.last_sequence, root=plan.root, token=token,
                           gen_time=at)
    return batch


def stamped(records: list[StoredRecord], plan: BatchPlan, batch_id: int = 1
            ) -> list[StoredRecord]:
    return [dataclasses.replace(r, stamp=RecordStamp(batch_id, path))
            for r, path in zip(records, plan.paths, strict=True)]


@pytest.fixture
def tsa_cert(tsa_credentials: tuple[PrivateKey, x509.Certificate]) -> x509.Certificate:
    return tsa_credentials[1]


def test_plan_covers_the_record_hashes() -> None:
    records = make_chain(7)
    plan = plan_batch(records)
    assert (plan.first_sequence, plan.last_sequence, len(plan.paths)) == (1, 7, 7)
    assert plan.root == merkle_root([bytes.fromhex(r.record_hash) for r in records])
    assert record_leaf(records[0].record_hash) == bytes.fromhex(records[0].record_hash)


def test_plan_needs_consecutive_records() -> None:
    records = make_chain(4)
    with pytest.raises(ValueError):
        plan_batch([records[0], records[2]])
    with pytest.raises(ValueError):
        plan_batch([])


@pytest.mark.parametrize("size", [1, 2, 5, 8])
def test_stamped_batch_verifies(tsa: TimeStampAuthority, tsa_cert: x509.Certificate,
                                pki_now: datetime, size: int) -> None:
    records = make_chain(size + 3)[3:]  # a batch need not start at record 1
    plan = plan_batch(records)
    batch = stamp(tsa, plan, pki_now)
    token = verify_batch(batch, [tsa_cert])
    assert (token.gen_time, token.message_imprint) == (pki_now, plan.root)
    for record in stamped(records, plan):
        assert verify_record_stamp(record, batch).batch_id == 1


def test_tampered_stamps_are_named(tsa: TimeStampAuthority, tsa_cert: x509.Certificate,
                                   pki_now: datetime) -> None:
    records = make_chain(6)
    plan = plan_batch(records[:5])
    batch = stamp(tsa, plan, pki_now)
    good = stamped(records[:5], plan)

    def fails(record: StoredRecord, b: TimestampBatch = batch) -> str:
        with pytest.raises(StampInvalidError) as caught:
            verify_record_stamp(record, b)
        assert caught.value.sequence == record.sequence
        assert caught.value.code == "server.messagelog.timestamp_invalid"
        return caught.value.reason

    assert "not time-stamped" in fails(records[5])
    assert "does not lead" in fails(dataclasses.replace(good[2], record_hash="f" * 64))
    assert "does not lead" in fails(dataclasses.replace(
        good[2], stamp=RecordStamp(1, (b"\x00" * 32, *plan.paths[2][1:]))))
    assert "malformed" in fails(dataclasses.replace(good[2], stamp=RecordStamp(1, ())))
    # a stamp moved to another record of the same batch
    assert "does not lead" in fails(dataclasses.replace(good[3], stamp=good[2].stamp))
    assert "outside batch" in fails(dataclasses.replace(records[5], stamp=good[4].stamp))
    assert "batch 2" in fails(dataclasses.replace(good[0], stamp=RecordStamp(2, plan.paths[0])))
    moved = dataclasses.replace(batch, first_sequence=2, last_sequence=6)
    assert "does not lead" in fails(good[1], moved)


def test_bad_tokens_are_named_at_the_first_record(
    tsa: TimeStampAuthority, tsa_cert: x509.Certificate, pki_now: datetime,
    dev_ca_tsa_other: x509.Certificate,
) -> None:
    records = make_chain(4)
    plan = plan_batch(records[1:])
    batch = stamp(tsa, plan, pki_now)
    other_root = dataclasses.replace(batch, root=b"\x01" * 32)
    later = dataclasses.replace(batch, gen_time=pki_now + timedelta(seconds=1))
    truncated = dataclasses.replace(batch, token=batch.token[:-1])
    for bad, certs, reason in (
        (other_root, [tsa_cert], "message imprint"),
        (later, [tsa_cert], "claims time"),
        (truncated, [tsa_cert], "token of batch 1"),
        (batch, [dev_ca_tsa_other], "approved"),
    ):
        with pytest.raises(StampInvalidError) as caught:
            verify_batch(bad, certs)
        assert caught.value.sequence == 2
        assert reason in caught.value.reason


@pytest.fixture(scope="module")
def dev_ca_tsa_other(dev_ca: DevCA, pki_now: datetime) -> x509.Certificate:
    return dev_ca.issue_tsa_cert("Other TSA", now=pki_now)[1]


def test_batch_rejects_bad_values(pki_now: datetime) -> None:
    base = {"id": 1, "first_sequence": 1, "last_sequence": 1, "root": b"\x00" * 32,
            "token": b"", "gen_time": pki_now}
    for change in ({"id": 0}, {"first_sequence": 0}, {"last_sequence": 0},
                   {"root": b"\x00"}, {"gen_time": pki_now.replace(tzinfo=None)}):
        with pytest.raises(ValueError):
            TimestampBatch(**{**base, **change})  # type: ignore[arg-type]
