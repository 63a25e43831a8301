"""Archive files: containers, linking file, archive-to-archive chain; tampering of each kind."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.auditkit import AuditPki, make_log, relink, repack, swap_bodies, unpack
from xchange.archive import (
    LINKING_NAME,
    ArchiveContents,
    archive_hash,
    build_archive,
    check_succession,
    read_archive,
)
from xchange.canonical import canonical_json, parse_json
from xchange.errors import BadRequestError, ChainBrokenError, EvidenceError
from xchange.evidence import MessageEvidence
from xchange.messagelog import GENESIS_HASH

SERVER = "TEST/GOV/1001/ss1"


@pytest.fixture(scope="module")
def logs(audit_pki: AuditPki) -> tuple[list[MessageEvidence], list[MessageEvidence]]:
    """Two consecutive stretches of one log: records 1-6 and 7-10."""
    first = make_log(audit_pki, 3)
    second = make_log(audit_pki, 2, first=7, prev_hash=first[-1].record.record_hash,
                      offset=timedelta(minutes=5))
    return first, second


@pytest.fixture(scope="module")
def archives(audit_pki: AuditPki, logs: tuple[list[MessageEvidence], list[MessageEvidence]]
             ) -> tuple[bytes, bytes]:
    one, h1 = build_archive(logs[0], server=SERVER, number=1, previous_archive=GENESIS_HASH,
                            created_at=audit_pki.now)
    two, _ = build_archive(logs[1], server=SERVER, number=2, previous_archive=h1,
                           created_at=audit_pki.now)
    return one, two


def test_round_trip(archives: tuple[bytes, bytes],
                    logs: tuple[list[MessageEvidence], list[MessageEvidence]]) -> None:
    one = read_archive(archives[0])
    assert one.evidence == tuple(logs[0])
    link = one.linking
    assert (link.number, link.first_sequence, link.last_sequence) == (1, 1, 6)
    assert link.previous_archive == GENESIS_HASH
    assert link.archive_hash == archive_hash(unpack(archives[0])[LINKING_NAME])
    two = read_archive(archives[1])
    check_succession(one.linking, two.linking)


def test_build_refuses_a_broken_chain(
    audit_pki: AuditPki, logs: tuple[list[MessageEvidence], list[MessageEvidence]]
) -> None:
    with pytest.raises(ChainBrokenError):
        build_archive([logs[0][0], logs[0][2]], server=SERVER, number=1,
                      previous_archive=GENESIS_HASH, created_at=audit_pki.now)
    with pytest.raises(ValueError, match="only archive 1"):
        build_archive(logs[0], server=SERVER, number=2, previous_archive=GENESIS_HASH,
                      created_at=audit_pki.now)


def broken(data: bytes, error: type[Exception], sequence: int | None, match: str) -> None:
    with pytest.raises(error, match=match) as info:
        read_archive(data)
    assert getattr(info.value, "sequence", None) == sequence


def test_altered_container_is_named(archives: tuple[bytes, bytes]) -> None:
    files = unpack(archives[0])
    name = "containers/000000000004.asice"
    files[name] = swap_bodies(files[name])
    broken(repack(files), EvidenceError, 4, "does not match its hash in the linking file")
    # A forger who also rewrites the linking file still breaks the record's own hash ...
    relink(files, lambda cs: None)
    broken(repack(files), ChainBrokenError, 4, "record content does not match its hash")


def test_deleted_container_is_named(archives: tuple[bytes, bytes]) -> None:
    files = unpack(archives[0])
    del files["containers/000000000003.asice"]
    broken(repack(files), EvidenceError, 3, "containers missing")
    relink(files, lambda cs: cs.pop(2))
    broken(repack(files), ChainBrokenError, 3, "expected record 3, found record 4")


def test_inserted_container_is_named(archives: tuple[bytes, bytes]) -> None:
    files = unpack(archives[0])
    files["containers/000000000099.asice"] = files["containers/000000000002.asice"]
    broken(repack(files), EvidenceError, 99, "not in the linking file")
    relink(files, lambda cs: cs.insert(3, {"name": "containers/000000000099.asice",
                                          "sequence": 99, "sha256": "", "link": ""}))
    broken(repack(files), EvidenceError, 99, "holds record 2")


def test_reordered_containers_are_named(archives: tuple[bytes, bytes]) -> None:
    files = unpack(archives[0])
    a, b = "containers/000000000002.asice", "containers/000000000003.asice"
    files[a], files[b] = files[b], files[a]
    broken(repack(files), EvidenceError, 2, "does not match its hash")
    files[a], files[b] = files[b], files[a]
    relink(files, lambda cs: cs.insert(1, cs.pop(2)))
    broken(repack(files), ChainBrokenError, 2, "expected record 2, found record 3")


def test_altered_link_is_named(archives: tuple[bytes, bytes]) -> None:
    files = unpack(archives[0])
    doc = parse_json(files[LINKING_NAME])
    doc["containers"][4]["link"] = "0" * 64
    files[LINKING_NAME] = canonical_json(doc)
    broken(repack(files), EvidenceError, 5, "the link of containers/000000000005.asice")


def test_rewritten_archive_breaks_the_link_from_the_next(archives: tuple[bytes, bytes]) -> None:
    files = unpack(archives[0])
    relink(files, lambda cs: cs.pop())  # drop the last record: chain still fine inside
    doc = parse_json(files[LINKING_NAME])
    del files["containers/000000000006.asice"]
    doc["chain"]["last_sequence"] = 5
    files[LINKING_NAME] = canonical_json(doc)
    with pytest.raises(ChainBrokenError, match="not the one the linking file names"):
        read_archive(repack(files))
    forged = read_archive(repack(_with_last(files, archives[0])))
    with pytest.raises(EvidenceError, match="does not name the hash of archive 1"):
        check_succession(forged.linking, read_archive(archives[1]).linking)


def _with_last(files: dict[str, bytes], original: bytes) -> dict[str, bytes]:
    """The linking file made consistent with records 1-5 (a forger's full rewrite)."""
    contents: ArchiveContents = read_archive(original)
    doc = parse_json(files[LINKING_NAME])
    doc["chain"]["last_hash"] = contents.evidence[4].record.record_hash
    files[LINKING_NAME] = canonical_json(doc)
    return files


def test_succession_checks_number_server_and_chain(archives: tuple[bytes, bytes]) -> None:
    one, two = read_archive(archives[0]).linking, read_archive(archives[1]).linking
    with pytest.raises(EvidenceError, match="does not follow"):
        check_succession(two, one)
    with pytest.raises(EvidenceError, match="does not follow archive 1"):
        check_succession(one, one)


def test_malformed_linking_file(archives: tuple[bytes, bytes]) -> None:
    files = unpack(archives[0])
    doc = parse_json(files[LINKING_NAME])
    doc["extra"] = 1
    files[LINKING_NAME] = canonical_json(doc)
    with pytest.raises(BadRequestError, match="missing or unknown keys"):
        read_archive(repack(files))
    files[LINKING_NAME] = b"[]"
    with pytest.raises(BadRequestError, match="malformed archive"):
        read_archive(repack(files))
