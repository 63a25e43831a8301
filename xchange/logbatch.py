"""Batch time-stamps of the message log (pure core).

A security server does not ask a time-stamping authority for every record.  Every
``timestamping_interval_seconds`` it takes the records logged since the last batch -- always
a run of consecutive sequence numbers -- builds a Merkle tree over them (:mod:`xchange.merkle`),
gets one RFC 3161 token for the root and keeps, per record, its audit path to the root.

What is stamped (the format, copied into ``docs/protocol.md``):

* **leaf data** of a record = the 32 raw bytes of its ``record_hash`` (the hex decoded).  The
  record hash covers every field of the record, the signature and the stapled OCSP responses
  included, and its place in the hash chain; a token over it therefore proves the *whole*
  record existed by the token's time, not only its signature.  (X-Road stamps signature
  hashes; stamping the record hash is stronger and costs the same.)
* **leaf index** = the record's sequence minus the batch's ``first_sequence``; the tree has
  ``last_sequence - first_sequence + 1`` leaves.
* **token** = an RFC 3161 TimeStampToken whose message imprint is SHA-256 with the Merkle
  root itself as ``hashedMessage`` (the root already is a SHA-256 value; it is not hashed
  again).  So ``openssl ts -verify -digest <root hex>`` checks a token on its own.

:func:`plan_batch` builds a batch, :func:`verify_batch` checks a batch's token and
:func:`verify_record_stamp` a record's path; failures raise
:class:`~xchange.errors.StampInvalidError` naming the first record concerned.  Nothing here
talks to a TSA, stores anything or reads the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol

from cryptography import x509

from xchange.errors import StampInvalidError, TimestampingFailedError
from xchange.merkle import HASH_SIZE, PathMemo, merkle_tree, root_from_path
from xchange.messagelog import RecordStamp, StoredRecord
from xchange.timestamp import TimestampToken, verify_timestamp_token

__all__ = [
    "BatchLeaf",
    "BatchPlan",
    "TimestampBatch",
    "plan_batch",
    "record_leaf",
    "verify_batch",
    "verify_record_stamp",
]

STAMP_HASH_ALG: Final = "sha256"
"""The message imprint algorithm of batch tokens (the root is a SHA-256 value)."""


def record_leaf(record_hash: str) -> bytes:
    """The Merkle leaf data of a record: its hash as 32 raw bytes."""
    return bytes.fromhex(record_hash)


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """A batch before it is stamped: its range, its root and every record's path."""

    first_sequence: int
    last_sequence: int
    root: bytes
    paths: tuple[tuple[bytes, ...], ...]
    """Audit paths, the first record's first."""


@dataclass(frozen=True, slots=True)
class TimestampBatch:
    """A stamped batch: records ``first_sequence`` to ``last_sequence`` (inclusive) are the
    leaves of a Merkle tree whose ``root`` the RFC 3161 ``token`` (DER) stamps at
    ``gen_time`` (the token's genTime, kept for searching; the token is the evidence)."""

    id: int
    first_sequence: int
    last_sequence: int
    root: bytes
    token: bytes = field(repr=False)
    gen_time: datetime

    def __post_init__(self) -> None:
        if self.id < 1 or self.first_sequence < 1 or self.last_sequence < self.first_sequence:
            raise ValueError("a batch has an id >= 1 and a non-empty range of records")
        if len(self.root) != HASH_SIZE:
            raise ValueError("root must be 32 bytes")
        if self.gen_time.utcoffset() is None:
            raise ValueError("gen_time must be timezone-aware")

    @property
    def size(self) -> int:
        """How many records (leaves) the batch has."""
        return self.last_sequence - self.first_sequence + 1


class BatchLeaf(Protocol):
    """What a batch needs of a record: its number and its hash (a
    :class:`~xchange.messagelog.StoredRecord` or a :class:`~xchange.messagelog.ChainCheckpoint`)."""

    @property
    def sequence(self) -> int: ...

    @property
    def record_hash(self) -> str: ...


def plan_batch(records: Sequence[BatchLeaf]) -> BatchPlan:
    """The Merkle tree over ``records``, which must be consecutive (a programming error
    otherwise: the log hands them over in sequence order)."""
    if not records:
        raise ValueError("a batch needs at least one record")
    first = records[0].sequence
    for offset, record in enumerate(records):
        if record.sequence != first + offset:
            raise ValueError("the records of a batch must have consecutive sequence numbers")
    root, paths = merkle_tree([record_leaf(r.record_hash) for r in records])
    return BatchPlan(first, records[-1].sequence, root, tuple(paths))


def verify_batch(
    batch: TimestampBatch, tsa_certs: Sequence[x509.Certificate], *, at: datetime | None = None
) -> TimestampToken:
    """Verify that ``batch.token`` is an approved TSA's stamp of ``batch.root`` and that its
    genTime is ``batch.gen_time``; return the verified token.

    ``tsa_certs`` and ``at`` as for :func:`xchange.timestamp.verify_timestamp_token` (an
    auditor leaves ``at`` out).  Raises :class:`StampInvalidError` at the batch's first
    record.
    """
    try:
        token = verify_timestamp_token(
            batch.token, data_hash=batch.root, tsa_certs=tsa_certs, at=at,
            hash_alg=STAMP_HASH_ALG,
        )
    except TimestampingFailedError as exc:
        raise StampInvalidError(batch.first_sequence,
                                f"token of batch {batch.id}: {exc.message}") from exc
    if token.gen_time != batch.gen_time:
        raise StampInvalidError(
            batch.first_sequence,
            f"batch {batch.id} claims time {batch.gen_time.isoformat()}, its token says "
            f"{token.gen_time.isoformat()}",
        )
    return token


def verify_record_stamp(record: StoredRecord, batch: TimestampBatch, *,
                        memo: PathMemo | None = None) -> RecordStamp:
    """Verify that ``record`` is a leaf of ``batch`` whose path reaches the batch's root.

    Only the path: check the batch's token once with :func:`verify_batch`, and the record's
    hash with :func:`xchange.messagelog.verify_chain`.  Returns the record's stamp; raises
    :class:`StampInvalidError` if it has none or it does not verify.
    """
    stamp = record.stamp
    sequence = record.sequence
    if stamp is None:
        raise StampInvalidError(sequence, "the record is not time-stamped")
    if stamp.batch_id != batch.id:
        raise StampInvalidError(sequence, f"stamped by batch {stamp.batch_id}, not {batch.id}")
    if not batch.first_sequence <= sequence <= batch.last_sequence:
        raise StampInvalidError(
            sequence, f"outside batch {batch.id} (records {batch.first_sequence}.."
                      f"{batch.last_sequence})")
    try:
        root = root_from_path(record_leaf(record.record_hash), sequence - batch.first_sequence,
                              batch.size, stamp.path, memo=memo)
    except ValueError as exc:
        raise StampInvalidError(sequence, f"malformed Merkle path: {exc}") from exc
    if root != batch.root:
        raise StampInvalidError(
            sequence, f"Merkle path does not lead to the root of batch {batch.id}")
    return stamp
