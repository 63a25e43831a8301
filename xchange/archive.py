"""Archive files of the message log: containers, their linking file, the archive chain (pure).

An archive file is a ZIP with the ASiC layout of :mod:`xchange.asic` (``mimetype`` first,
``META-INF/manifest.xml``) and its own media type :data:`ARCHIVE_MIMETYPE`.  It holds

* ``containers/<sequence, 12 digits>.asice``: one evidence container per record
  (:mod:`xchange.evidence`), in sequence order;
* ``linking.json``: the linking file, canonical JSON::

    {"type": "xchange-archive-linking", "v": 1,
     "server": "<security server id>", "number": <1, 2, ...>,
     "previous_archive": "<hex archive hash of archive number-1, 64 zeros for number 1>",
     "created_at": "YYYY-MM-DDTHH:MM:SS.ffffffZ",
     "chain": {"prev_hash": "<prev_hash of the first record>",
               "first_sequence": n, "last_sequence": m, "last_hash": "<its record_hash>"},
     "containers": [{"name": "containers/000000000042.asice", "sequence": 42,
                     "sha256": "<hex SHA-256 of the container file>",
                     "link": "<hex link>"}, ...]}

Links chain every container to the one before and the first to the previous archive::

    link_0 = previous_archive (32 bytes)
    link_i = SHA-256( "xchange-archive-link-v1" || link_(i-1) || sha256_i )

and the **archive hash**, which the next archive names as ``previous_archive``, is the
SHA-256 of ``linking.json``'s bytes (it covers every container hash and link).  Removing,
inserting, altering or reordering a container breaks its hash or its link; rewriting the
linking file to hide that changes the archive hash, which the next archive's
``previous_archive`` no longer matches; and the records' own hash chain
(:mod:`xchange.messagelog`) runs on from archive to archive.

:func:`build_archive` writes one, :func:`read_archive` reads one and checks everything that
needs no key or certificate: layout, container hashes and links, the record chain inside the
archive, and (given the previous archive's linking) the link to it.  Signatures, OCSP
responses and time-stamps are :mod:`xchange.audit`'s.  No I/O, no clock.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from xchange.asic import (
    BAD_CONTAINER_CODE,
    Limits,
    entry_names,
    read_container,
    write_container,
)
from xchange.canonical import canonical_json, parse_json
from xchange.errors import BadRequestError, ChainBrokenError, EvidenceError
from xchange.evidence import MessageEvidence, format_time, read_evidence, write_evidence
from xchange.messagelog import GENESIS_HASH, ChainCheckpoint, verify_chain

__all__ = [
    "ARCHIVE_MIMETYPE",
    "LINKING_NAME",
    "ArchiveContents",
    "ArchiveLinking",
    "LinkedContainer",
    "archive_hash",
    "build_archive",
    "check_succession",
    "container_kind",
    "read_archive",
]

ARCHIVE_MIMETYPE: Final = "application/vnd.xchange.archive+zip"
LINKING_NAME: Final = "linking.json"
LINKING_TYPE: Final = "xchange-archive-linking"
_LINK_TAG: Final = b"xchange-archive-link-v1"
_CONTAINER_NAME: Final = re.compile(r"containers/(\d{12})\.asice")
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
ARCHIVE_LIMITS: Final = Limits(
    max_entries=100_003, max_entry_bytes=128 * 1024 * 1024,
    max_total_bytes=4 * 1024 * 1024 * 1024, max_ratio=200,
)
"""What :func:`read_archive` accepts: up to 100 000 containers and 4 GiB uncompressed."""


@dataclass(frozen=True, slots=True)
class LinkedContainer:
    name: str
    sequence: int
    sha256: str
    link: str


@dataclass(frozen=True, slots=True)
class ArchiveLinking:
    """The parsed linking file, and the archive hash (SHA-256 of its bytes)."""

    server: str
    number: int
    previous_archive: str
    created_at: datetime
    prev_hash: str
    first_sequence: int
    last_sequence: int
    last_hash: str
    containers: tuple[LinkedContainer, ...]
    archive_hash: str


@dataclass(frozen=True, slots=True)
class ArchiveContents:
    """An archive whose layout, links and record chain were checked."""

    linking: ArchiveLinking
    containers: tuple[bytes, ...]
    """The container files, in sequence order (what auditors export or check one by one)."""
    evidence: tuple[MessageEvidence, ...]


def _bad(message: str) -> BadRequestError:
    return BadRequestError(f"malformed archive: {message}", code=BAD_CONTAINER_CODE)


def _container_name(sequence: int) -> str:
    return f"containers/{sequence:012d}.asice"


def _media_type_of(name: str) -> str | None:
    if name == LINKING_NAME:
        return "application/json"
    return "application/vnd.etsi.asic-e+zip" if _CONTAINER_NAME.fullmatch(name) else None


def next_link(previous: str, container_sha256: str) -> str:
    return hashlib.sha256(
        _LINK_TAG + bytes.fromhex(previous) + bytes.fromhex(container_sha256)
    ).hexdigest()


def archive_hash(linking_bytes: bytes) -> str:
    """The archive hash: hex SHA-256 of the linking file's bytes."""
    return hashlib.sha256(linking_bytes).hexdigest()


def build_archive(
    evidence: Sequence[MessageEvidence],
    *,
    server: str,
    number: int,
    previous_archive: str,
    created_at: datetime,
) -> tuple[bytes, str]:
    """Write the archive of ``evidence`` (consecutive records, in order); return its bytes
    and its archive hash.  ``previous_archive`` is the previous archive's hash (64 zeros for
    archive 1)."""
    if not evidence:
        raise ValueError("an archive holds at least one record")
    if number < 1 or not _HEX64.fullmatch(previous_archive):
        raise ValueError("number must be positive and previous_archive a hex SHA-256")
    if (number == 1) != (previous_archive == GENESIS_HASH):
        raise ValueError("only archive 1 has no previous archive")
    records = [e.record for e in evidence]
    first = records[0]
    # The records must already form a chain: an archive never papers over a broken log.
    report = verify_chain(records, checkpoint=ChainCheckpoint(first.sequence - 1,
                                                              first.prev_hash))
    files: list[tuple[str, str, bytes]] = []
    entries: list[dict[str, Any]] = []
    link = previous_archive
    for item in evidence:
        data = write_evidence(item)
        digest = hashlib.sha256(data).hexdigest()
        link = next_link(link, digest)
        name = _container_name(item.record.sequence)
        files.append((name, "application/vnd.etsi.asic-e+zip", data))
        entries.append({"name": name, "sequence": item.record.sequence, "sha256": digest,
                        "link": link})
    linking = canonical_json({
        "type": LINKING_TYPE,
        "v": 1,
        "server": server,
        "number": number,
        "previous_archive": previous_archive,
        "created_at": format_time(created_at),
        "chain": {"prev_hash": first.prev_hash, "first_sequence": first.sequence,
                  "last_sequence": report.last_sequence, "last_hash": report.last_hash},
        "containers": entries,
    })
    files.append((LINKING_NAME, "application/json", linking))
    return write_container(files, mimetype=ARCHIVE_MIMETYPE), archive_hash(linking)


def read_archive(data: bytes, *, limits: Limits = ARCHIVE_LIMITS) -> ArchiveContents:
    """Read an archive and check its layout, container hashes, links and record chain.

    Raises :class:`~xchange.errors.BadRequestError` for a malformed file,
    :class:`~xchange.errors.EvidenceError` naming the record whose container does not match
    the linking file, and :class:`~xchange.errors.ChainBrokenError` for a broken record chain.
    """
    container = read_container(data, media_type_of=_media_type_of, limits=limits,
                               mimetype=ARCHIVE_MIMETYPE)
    linking_bytes = container.get(LINKING_NAME)
    linking = _parse_linking(linking_bytes)
    listed = {c.name for c in linking.containers}
    present = set(container.objects) - {LINKING_NAME}
    if listed != present:
        unlisted = sorted(present - listed)
        missing = sorted(listed - present)
        what = (f"containers not in the linking file: {', '.join(unlisted)}" if unlisted
                else f"containers missing: {', '.join(missing)}")
        sequence = _sequence_of((unlisted or missing)[0])
        raise EvidenceError(sequence, what)
    # 1. Every container: its hash and its link, in the linking file's order.
    link = linking.previous_archive
    files: list[bytes] = []
    for item in linking.containers:
        file = container.objects[item.name]
        if hashlib.sha256(file).hexdigest() != item.sha256:
            raise EvidenceError(item.sequence,
                                f"{item.name} does not match its hash in the linking file")
        link = next_link(link, item.sha256)
        if link != item.link:
            raise EvidenceError(item.sequence, f"the link of {item.name} does not verify")
        files.append(file)
    # 2. Every container's record is the one the linking file says, and they chain.
    evidence = []
    for item, file in zip(linking.containers, files, strict=True):
        try:
            ev = read_evidence(file)
        except BadRequestError as exc:
            raise EvidenceError(item.sequence, f"{item.name}: {exc.message}") from exc
        if ev.record.sequence != item.sequence:
            raise EvidenceError(item.sequence,
                                f"{item.name} holds record {ev.record.sequence}")
        evidence.append(ev)
    report = verify_chain(
        (e.record for e in evidence),
        checkpoint=ChainCheckpoint(linking.first_sequence - 1, linking.prev_hash),
    )
    if report.last_sequence != linking.last_sequence or report.last_hash != linking.last_hash:
        raise ChainBrokenError(report.last_sequence,
                               "the last record is not the one the linking file names")
    return ArchiveContents(linking=linking, containers=tuple(files), evidence=tuple(evidence))


def check_succession(previous: ArchiveLinking, current: ArchiveLinking) -> None:
    """``current`` must follow ``previous``: next number, its archive hash, the record
    chain continued.  Raises :class:`~xchange.errors.EvidenceError` (archive-level) or
    :class:`~xchange.errors.ChainBrokenError`."""
    if current.server != previous.server:
        raise EvidenceError(None, f"archive {current.number} is of server {current.server}, "
                                  f"archive {previous.number} of {previous.server}")
    if current.number != previous.number + 1:
        raise EvidenceError(None, f"archive {current.number} does not follow archive "
                                  f"{previous.number}")
    if current.previous_archive != previous.archive_hash:
        raise EvidenceError(None, f"archive {current.number} does not name the hash of "
                                  f"archive {previous.number}: an archive was altered or "
                                  "replaced")
    if (current.first_sequence != previous.last_sequence + 1
            or current.prev_hash != previous.last_hash):
        raise ChainBrokenError(current.first_sequence,
                               f"archive {current.number} does not continue the record chain "
                               f"of archive {previous.number}")


def container_kind(data: bytes) -> Literal["archive", "bundle", "evidence"]:
    """What a (decrypted) file is: an archive file, an exported query (a bundle of
    evidence containers) or one evidence container.  Only the ZIP directory is read."""
    names = entry_names(data)
    if data[30:38] == b"mimetype" and data[38:38 + len(ARCHIVE_MIMETYPE)] == \
            ARCHIVE_MIMETYPE.encode("ascii"):
        return "archive"
    return "bundle" if any(n.startswith("records/") for n in names) else "evidence"


def _sequence_of(name: str) -> int | None:
    match = _CONTAINER_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def _parse_linking(data: bytes) -> ArchiveLinking:
    try:
        doc = parse_json(data)
    except BadRequestError as exc:
        raise _bad(f"{LINKING_NAME}: {exc.message}") from exc
    try:
        if doc["type"] != LINKING_TYPE or doc["v"] != 1:
            raise _bad(f"{LINKING_NAME} is not an {LINKING_TYPE} v1 document")
        if set(doc) != {"type", "v", "server", "number", "previous_archive", "created_at",
                        "chain", "containers"}:
            raise _bad(f"{LINKING_NAME} has missing or unknown keys")
        chain = doc["chain"]
        if set(chain) != {"prev_hash", "first_sequence", "last_sequence", "last_hash"}:
            raise _bad(f"{LINKING_NAME}: chain has missing or unknown keys")
        containers = []
        for c in doc["containers"]:
            if set(c) != {"name", "sequence", "sha256", "link"}:
                raise _bad(f"{LINKING_NAME}: a container entry has missing or unknown keys")
            if c["name"] != _container_name(_int(c["sequence"])):
                raise _bad(f"{LINKING_NAME}: container {c['name']!r} is misnamed")
            containers.append(LinkedContainer(c["name"], c["sequence"], _hex(c["sha256"]),
                                              _hex(c["link"])))
        linking = ArchiveLinking(
            server=_str(doc["server"]),
            number=_int(doc["number"]),
            previous_archive=_hex(doc["previous_archive"]),
            created_at=datetime.strptime(_str(doc["created_at"]), _TIME_FORMAT).replace(
                tzinfo=UTC),
            prev_hash=_hex(chain["prev_hash"]),
            first_sequence=_int(chain["first_sequence"]),
            last_sequence=_int(chain["last_sequence"]),
            last_hash=_hex(chain["last_hash"]),
            containers=tuple(containers),
            archive_hash=archive_hash(data),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(f"{LINKING_NAME}: {exc}") from exc
    if not linking.containers or linking.containers[0].sequence != linking.first_sequence:
        raise _bad(f"{LINKING_NAME}: the first container is not the chain's first record")
    return linking


def _hex(value: object) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ValueError("expected 64 lowercase hex characters")
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("expected a non-negative integer")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value
