"""The development CA's memory: every certificate it issued, its revocations, its settings.

What it does: keeps, in one SQLite file in the CA directory (``index.db``), a row per issued
certificate (serial, profile, subject, validity, the DER itself) with its revocation time and
reason once revoked, and a few CA settings (the OCSP responder URL written into issued
certificates).  The OCSP responder reads it on every request, so a revocation made by another
process (``xchange ca revoke``) is answered at once; SQLite's transactions make each write
atomic and keep concurrent writers from losing each other's updates.

What it does not: decide anything about OCSP (:mod:`certs.ocsp`), or keep CRLs.  Serial numbers
are stored as lower-case hex text: they are up to 159 bits, wider than an SQLite integer.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from xchange.certificates import OID_SERIAL_NUMBER

__all__ = [
    "INDEX_FILE",
    "REVOCATION_REASONS",
    "CertificateIndex",
    "IssuedCertificate",
    "Profile",
    "parse_reason",
]

INDEX_FILE = "index.db"

Profile = Literal["sign", "auth", "tls", "ocsp", "tsa"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS certificates (
    serial      TEXT PRIMARY KEY,
    profile     TEXT NOT NULL,
    subject     TEXT NOT NULL,
    not_before  TEXT NOT NULL,
    not_after   TEXT NOT NULL,
    der         BLOB NOT NULL,
    revoked_at  TEXT,
    reason      TEXT
);
CREATE TABLE IF NOT EXISTS settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
"""

# removeFromCRL only undoes a certificateHold on a delta CRL (RFC 5280 5.3.1); it is not a
# reason to revoke.
REVOCATION_REASONS = tuple(
    r for r in x509.ReasonFlags if r is not x509.ReasonFlags.remove_from_crl
)


def parse_reason(text: str) -> x509.ReasonFlags:
    """A revocation reason from its RFC 5280 name (``keyCompromise``, ``superseded``, ...)."""
    for reason in REVOCATION_REASONS:
        if text == reason.value:
            return reason
    names = ", ".join(r.value for r in REVOCATION_REASONS)
    raise ValueError(f"unknown revocation reason {text!r}; one of: {names}")


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """One row of the index: a certificate the CA issued, and whether it is revoked."""

    serial: int
    profile: str
    subject: str
    not_before: datetime
    not_after: datetime
    der: bytes
    revoked_at: datetime | None
    reason: x509.ReasonFlags | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)


def _hex(serial: int) -> str:
    return format(serial, "x")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _row(row: sqlite3.Row) -> IssuedCertificate:
    return IssuedCertificate(
        serial=int(row["serial"], 16),
        profile=row["profile"],
        subject=row["subject"],
        not_before=_time(row["not_before"]),
        not_after=_time(row["not_after"]),
        der=row["der"],
        revoked_at=None if row["revoked_at"] is None else _time(row["revoked_at"]),
        reason=None if row["reason"] is None else x509.ReasonFlags(row["reason"]),
    )


class CertificateIndex:
    """The index file of one CA directory.  Each call opens its own short connection, so one
    object serves any thread and sees other processes' writes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @property
    def path(self) -> Path:
        return self._path

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A broken or unreadable index is a file problem to its callers (the CLI prints
        # OSErrors as one line), not a database one.
        try:
            db = sqlite3.connect(self._path, timeout=10.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise OSError(f"cannot open the CA index {self._path}: {exc}") from exc
        try:
            db.row_factory = sqlite3.Row
            yield db
        except sqlite3.Error as exc:
            raise OSError(f"the CA index {self._path} cannot be used: {exc}") from exc
        finally:
            db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            # IMMEDIATE takes the write lock up front: read-check-write cannot interleave.
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- settings ----------------------------------------------------------------------------

    def setting(self, name: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row["value"])

    def set_setting(self, name: str, value: str | None) -> None:
        with self._transaction() as db:
            if value is None:
                db.execute("DELETE FROM settings WHERE name = ?", (name,))
            else:
                db.execute(
                    "INSERT INTO settings (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (name, value),
                )

    # -- certificates ------------------------------------------------------------------------

    def record(self, cert: x509.Certificate, profile: Profile) -> None:
        """Remember an issued certificate (a serial is never recorded twice)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO certificates (serial, profile, subject, not_before, not_after, der) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    _hex(cert.serial_number),
                    profile,
                    cert.subject.rfc4514_string({OID_SERIAL_NUMBER: "serialNumber"}),
                    cert.not_valid_before_utc.isoformat(),
                    cert.not_valid_after_utc.isoformat(),
                    cert.public_bytes(serialization.Encoding.DER),
                ),
            )

    def get(self, serial: int) -> IssuedCertificate | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM certificates WHERE serial = ?", (_hex(serial),)
            ).fetchone()
        return None if row is None else _row(row)

    def all(self) -> list[IssuedCertificate]:
        """Every issued certificate, oldest first."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM certificates ORDER BY rowid").fetchall()
        return [_row(row) for row in rows]

    def revoke(self, serial: int, *, reason: x509.ReasonFlags, at: datetime) -> IssuedCertificate:
        """Mark ``serial`` revoked.  Refuses serials this CA did not issue, and a second
        revocation: revocation is final (RFC 5280 3.3), and its first time and reason stand."""
        if reason not in REVOCATION_REASONS:
            raise ValueError(f"{reason.value} is not a revocation reason")
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("revocation time must be timezone-aware")
        # OCSP carries whole seconds; storing more would make the answer differ from the record.
        when = at.astimezone(UTC).replace(microsecond=0)
        with self._transaction() as db:
            row = db.execute(
                "SELECT * FROM certificates WHERE serial = ?", (_hex(serial),)
            ).fetchone()
            if row is None:
                raise ValueError(f"serial {_hex(serial)} was not issued by this CA")
            if row["revoked_at"] is not None:
                raise ValueError(
                    f"certificate {_hex(serial)} ({row['subject']}) is already revoked "
                    f"since {row['revoked_at']} ({row['reason']})"
                )
            db.execute(
                "UPDATE certificates SET revoked_at = ?, reason = ? WHERE serial = ?",
                (when.isoformat(), reason.value, _hex(serial)),
            )
            updated = db.execute(
                "SELECT * FROM certificates WHERE serial = ?", (_hex(serial),)
            ).fetchone()
        return _row(updated)
